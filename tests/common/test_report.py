import json

import pytest
from mlflow import MlflowClient

from common import report, run, tracking


def test_report_has_one_row_per_run_with_differing_overrides(toy_cfg, mlflow_uri, monkeypatch):

    lrs = ["0.01", "0.1"]
    for lr in lrs:
        cfg = toy_cfg(
            f"module.lr={lr}", "logger.mlflow.experiment_name=toy_report", "trainer.max_epochs=1",
            "report_metrics=[val/loss,test/loss]",
        )
        monkeypatch.setattr(run, "_hydra_overrides", lambda lr=lr: [f"module.lr={lr}", "trainer.max_epochs=1"])
        run.train(cfg)
    table = report.runs_table(mlflow_uri, "toy_report", metrics=["test/loss"])
    assert table.columns == ["run", "note", "started (UTC)", "status", "epochs", "device", "module.lr",
                             "trainer.max_epochs", "test/loss", "mlflow"]
    assert [row[6] for row in table.rows] == lrs
    assert [row[4:6] for row in table.rows] == [["1", "cpu"]] * 2  # tags the run's RunSummary callback set
    md = [x for x in table.markdown().splitlines() if x.startswith("|")]
    assert len(md) == 2 + len(lrs) and md[0].startswith("| run | note | started (UTC) | status")
    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name("toy_report")
    runs = {r.data.params["module.lr"]: r for r in client.search_runs([exp.experiment_id])}
    # a loss is no rate: four significant digits; the CSV keeps the logged value
    assert [row[8] for row in table.rows] == [f"{runs[lr].data.metrics['test/loss']:.4g}" for lr in lrs]
    csv_rows = [x.split(",") for x in table.csv().splitlines()]
    assert csv_rows[0] == table.columns
    assert [float(r[8]) for r in csv_rows[1:]] == [runs[lr].data.metrics["test/loss"] for lr in lrs]
    assert csv_rows[1][-1].endswith(f"/#/experiments/{exp.experiment_id}/runs/{runs[lrs[0]].info.run_id}")
    # the key metrics again under summary/, rounded
    assert runs[lrs[0]].data.metrics["summary/test/loss"] == round(runs[lrs[0]].data.metrics["test/loss"], 6)
    # without --metrics the columns are the package's report_metrics, in its order
    assert report.runs_table(mlflow_uri, "toy_report").columns[-3:-1] == ["val/loss", "test/loss"]


def _hand_made(uri: str, experiment: str, runs: list[tuple[str, dict[str, float], dict[str, str]]]) -> list[str]:
    client = tracking.client(uri)  # the project's store set-up: a new store is created quietly, under its lock
    exp_id = client.create_experiment(experiment)
    ids = []
    for name, metrics, tags in runs:
        r = client.create_run(exp_id, run_name=name, start_time=1_700_000_000_000 + len(ids) * 60_000, tags={
            "report_metrics": json.dumps(["train/logo_recall", "test/none_recall", "test/loss"]),
            "report_labels": json.dumps({"train/logo_recall": "ALL TRAIN LOGO RECALL", "test/none_recall": "NONE RECALL"}),
            **tags})
        for k, v in metrics.items():
            client.log_metric(r.info.run_id, k, v)
        client.set_terminated(r.info.run_id)
        ids.append(r.info.run_id)
    return ids


def test_baseline_deltas_percent_labels_and_link(mlflow_uri):
    ids = _hand_made(mlflow_uri, "hand_baseline", [
        ("lora_r16", {"train/logo_recall": 0.9123, "test/none_recall": 0.80, "test/loss": 1.25},
         {"mlflow.note.content": "half r", "overrides": '["model.lora.r=16"]', "train_eval_subset": "300 of 1200"}),
        ("lora_r32", {"train/logo_recall": 0.9, "test/none_recall": 0.85, "test/loss": 1.5},
         {"overrides": '["model.lora.r=32"]', "epochs": "5", "device": "cpu"}),
    ])
    table = report.runs_table(mlflow_uri, "hand_baseline", baseline="lora_r32")
    assert table.columns == ["run", "note", "started (UTC)", "status", "epochs", "device", "train eval", "model.lora.r",
                             "ALL TRAIN LOGO RECALL", "NONE RECALL", "test/loss",
                             "Δ ALL TRAIN LOGO RECALL", "Δ NONE RECALL", "Δ test/loss", "mlflow"]
    r16, r32 = table.rows
    assert r16[:8] == ["lora_r16", "half r", "2023-11-14 22:13", "FINISHED", "", "", "300 of 1200", "16"]
    assert r32[4:8] == ["5", "cpu", "all", "32"]
    assert r16[8:14] == ["91.2", "80.0", "1.25", "↑1.2", "↓5.0", "↓0.25"]
    assert r32[8:14] == ["90.0", "85.0", "1.5", "=", "=", "="]
    assert r16[-1] == f"[{ids[0][:8]}](http://127.0.0.1:5000/#/experiments/{_exp_id(mlflow_uri)}/runs/{ids[0]})"
    assert f"against baseline `lora_r32` (run {ids[1][:8]})" in table.markdown()
    # the same by run id and as fractions; the CSV has the exact differences
    frac = report.runs_table(mlflow_uri, "hand_baseline", baseline=ids[1][:8], style="fraction")
    assert frac.rows[0][8:14] == ["0.912", "0.800", "1.25", "↑0.012", "↓0.050", "↓0.25"]
    raw = frac.raw[0][8:14]
    assert [float(x) for x in raw] == [0.9123, 0.8, 1.25, 0.9123 - 0.9, 0.8 - 0.85, 1.25 - 1.5]


def _exp_id(uri):
    return MlflowClient(tracking_uri=uri).get_experiment_by_name("hand_baseline").experiment_id


def test_baseline_that_does_not_exist(mlflow_uri, capsys):
    _hand_made(mlflow_uri, "hand_nobase", [("a", {"test/loss": 1.0}, {})])
    assert report.main(["--tracking-uri", mlflow_uri, "--experiment", "hand_nobase", "--baseline", "zzz"]) == 2
    assert capsys.readouterr().err.strip() == "error: --baseline zzz: no run with that name or id; names shown: a"


@pytest.mark.parametrize(("value", "rate", "style", "shown"), [
    (0.9888888597488403, True, "percent", "98.9"), (0.9888888597488403, True, "fraction", "0.989"),
    (12.3456, False, "percent", "12.35"), (None, True, "percent", ""), (float("nan"), True, "percent", "n/a"),
])
def test_values_are_rounded_for_display(value, rate, style, shown):
    assert report.fmt_value(value, rate, style) == shown


def test_report_cli_unknown_experiment(mlflow_uri, capsys):
    assert report.main(["--tracking-uri", mlflow_uri, "--experiment", "nope"]) == 2
    assert capsys.readouterr().err.strip() == f"error: no MLflow experiment named 'nope' in {mlflow_uri}"
