import base64
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from common import eval_report, run  # noqa: E402


def test_report_embeds_metrics_and_plots_and_links_runs(toy_cfg, mlflow_uri, tmp_path, monkeypatch):
    cfg = toy_cfg("logger.mlflow.experiment_name=toy_eval", "trainer.max_epochs=1")
    run.train(cfg)
    run_id = (tmp_path / "logs" / "toy.train" / "runs" / "00" / "mlflow_run_id").read_text()
    client = MlflowClient(tracking_uri=mlflow_uri)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    client.log_figure(run_id, fig, "plots/curve.png")
    client.log_text(run_id, "| a | b |\n|---|---|\n| 1 | 2 |\n", "tables/summary.md")

    out = tmp_path / "reports" / "eval_all"
    linked = eval_report.build(mlflow_uri, ["toy_eval"], out)
    assert linked == {"toy_eval": run_id}
    md = out.with_suffix(".md").read_text()
    test_loss = client.get_run(run_id).data.metrics["test/loss"]
    assert f"| test/loss | {test_loss:.4f} |" in md
    assert "![curve](eval_all_files/toy_eval/curve.png)" in md and (tmp_path / "reports" / "eval_all_files" / "toy_eval" / "curve.png").exists()
    assert "| a | b |" in md
    page = out.with_suffix(".html").read_text()
    png = page.split("data:image/png;base64,")[1].split("'")[0]
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"  # self-contained: the image is inside the page
    exp = client.get_experiment_by_name("eval-all")
    rep = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0]
    assert json.loads(rep.data.tags["linked_runs"]) == {"toy_eval": run_id}
    assert rep.data.metrics["toy_eval/test/loss"] == test_loss
    assert {a.path for a in client.list_artifacts(rep.info.run_id)} == {"eval_all.md", "eval_all.html"}


def test_missing_experiment_is_one_line(mlflow_uri, capsys, tmp_path):
    assert eval_report.main(["--tracking-uri", mlflow_uri, "--experiments", "nope", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == f"error: experiment 'nope' has no finished run to report in {mlflow_uri}"
    assert not list(tmp_path.iterdir())


def test_html_report_renders_its_plots_in_a_browser(toy_cfg, mlflow_uri, tmp_path):
    """Headless Chromium opens the page and the embedded plot is on screen (skips without Chromium)."""
    import shutil
    import subprocess

    import numpy as np
    import pytest
    from PIL import Image

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    cfg = toy_cfg("logger.mlflow.experiment_name=toy_html", "trainer.max_epochs=1")
    run.train(cfg)
    run_id = (tmp_path / "logs" / "toy.train" / "runs" / "00" / "mlflow_run_id").read_text()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.fill_between([0, 1], [0, 0], [1, 1], color="#1f77b4")
    MlflowClient(tracking_uri=mlflow_uri).log_figure(run_id, fig, "plots/blue.png")
    out = tmp_path / "r" / "report"
    eval_report.build(mlflow_uri, ["toy_html"], out, log=False)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1200,1600", f"--screenshot={shot}", out.with_suffix(".html").as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    blue = (np.abs(px - np.array([31, 119, 180])).sum(-1) < 30).sum()
    assert blue > 20_000, f"only {blue} plot-blue pixels on screen"


def test_html_renders_markdown_tables_as_tables():
    """A run's Markdown table artifact becomes an HTML table in eval_all.html, not its pipe-and-dash source."""
    s = eval_report.Section("retrieval", "r1", "run", {"test/f1": 0.5},
                            texts={"tables/metrics.md": "| model | F1 |\n|---|---|\n| a < b | 0.91 |\n"})
    page = eval_report.render_html([s], "t")
    assert "<th>model</th>" in page and "<td>a &lt; b</td>" in page and "<td>0.91</td>" in page
    assert "|---|" not in page
