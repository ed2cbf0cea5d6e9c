"""One evaluation report over several packages, built from their latest MLflow runs.

For each experiment (package) it takes the newest FINISHED run of its ``<package>.eval`` task (falling
back to ``<package>.train``), and writes:

* ``OUT.md``: a metrics table per package and links to its plots (copied beside it in ``OUT_files/``);
* ``OUT.html``: the same, self-contained (plots embedded as data URLs), to open in any browser;

then records the report as one MLflow run in the ``eval-all`` experiment whose tags link the runs it used::

    python -m common.eval_report --experiments vlm,textcls,retrieval --out reports/eval_all
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from common import io
from common.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Section:
    package: str
    run_id: str
    run_name: str
    metrics: dict[str, float]
    images: list[Path] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)  # small Markdown artifacts (tables) shown inline


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for a in client.list_artifacts(run_id, path):
        out.extend(_artifacts(client, run_id, a.path) if a.is_dir else [a.path])
    return out


def latest_run(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    for stage in (".eval", ".train"):
        runs = client.search_runs(
            [exp.experiment_id],
            f"tags.task LIKE '%{stage}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if runs:
            return runs[0]
    return None


def collect(tracking_uri: str, experiments: list[str], workdir: Path) -> list[Section]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    sections = []
    for name in experiments:
        run = latest_run(client, name)
        if run is None:
            raise UserError(f"experiment {name!r} has no finished run to report in {tracking_uri}")
        sec = Section(name, run.info.run_id, run.info.run_name, dict(sorted(run.data.metrics.items())))
        for art in _artifacts(client, run.info.run_id):
            if art.lower().endswith(IMAGE_SUFFIXES) or art.endswith(".md"):
                local = Path(client.download_artifacts(run.info.run_id, art, str(workdir)))
                if art.endswith(".md"):
                    sec.texts[art] = local.read_text(encoding="utf-8")
                else:
                    sec.images.append(local)
        sections.append(sec)
    return sections


def _metric_rows(metrics: dict[str, float]) -> list[tuple[str, str]]:
    return [(k, "n/a" if v != v else f"{v:.4f}") for k, v in metrics.items()]


def render_markdown(sections: list[Section], files_dir: Path, title: str) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.package}", "", f"MLflow run `{s.run_id}` — {s.run_name}", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in _metric_rows(s.metrics)]
        lines.append("")
        for name, text in s.texts.items():
            lines += [f"### {name}", "", text.strip(), ""]
        for img in s.images:
            dst = files_dir / s.package / img.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(img, dst)
            lines += [f"![{img.stem}]({files_dir.name}/{s.package}/{img.name})", ""]
    return "\n".join(lines)


def render_html(sections: list[Section], title: str) -> str:
    import markdown

    def data_url(p: Path) -> str:
        mime = "image/png" if p.suffix.lower() == ".png" else "image/jpeg"
        return f"data:{mime};base64,{base64.b64encode(p.read_bytes()).decode()}"

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
        "td.v{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%;border:1px solid #eee;margin:.5em 0}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for s in sections:
        parts.append(f"<h2 id='{s.package}'>{html.escape(s.package)}</h2>")
        parts.append(f"<p>MLflow run <code>{s.run_id}</code> — {html.escape(s.run_name)}</p>")
        parts.append("<table><tr><th>metric</th><th>value</th></tr>")
        parts += [f"<tr><td>{html.escape(k)}</td><td class='v'>{v}</td></tr>" for k, v in _metric_rows(s.metrics)]
        parts.append("</table>")
        for name, text in s.texts.items():  # our own Markdown artifacts (tables): rendered, not shown as source
            parts.append(f"<h3>{html.escape(name)}</h3><div class='md'>{markdown.markdown(text, extensions=['tables'])}</div>")
        for img in s.images:
            parts.append(f"<figure><img alt='{html.escape(img.stem)}' src='{data_url(img)}'><figcaption>{html.escape(img.name)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def build(tracking_uri: str, experiments: list[str], out: Path, title: str = "Evaluation report", log: bool = True) -> dict:
    """Write OUT.md, OUT_files/ and OUT.html; log them as one ``eval-all`` run. Returns the linked run ids."""
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        sections = collect(tracking_uri, experiments, Path(tmp))
        files_dir = out.parent / f"{out.name}_files"
        staged = Path(tmp) / "files"
        md = render_markdown(sections, staged, title).replace(f"]({staged.name}/", f"]({files_dir.name}/")
        page = render_html(sections, title)
        if files_dir.exists():
            shutil.rmtree(files_dir)
        if staged.exists():
            shutil.copytree(staged, files_dir)
        io.write_text(out.with_suffix(".md"), md)
        io.write_text(out.with_suffix(".html"), page)
    linked = {s.package: s.run_id for s in sections}
    if log:
        from mlflow import MlflowClient

        from common.tracking import experiment_id

        client = MlflowClient(tracking_uri=tracking_uri)
        run = client.create_run(
            experiment_id(tracking_uri, "eval-all"),
            run_name=f"eval-all {' '.join(experiments)}",
            tags={"linked_runs": json.dumps(linked), **{f"run.{k}": v for k, v in linked.items()}},
        )
        for s in sections:
            for k, v in s.metrics.items():
                client.log_metric(run.info.run_id, f"{s.package}/{k}", v)
        client.log_artifact(run.info.run_id, str(out.with_suffix(".md")))
        client.log_artifact(run.info.run_id, str(out.with_suffix(".html")))
        client.set_terminated(run.info.run_id, "FINISHED")
    return linked


def main(argv: list[str] | None = None) -> int:
    from common.config import project_root

    p = argparse.ArgumentParser(prog="python -m common.eval_report", description=__doc__.split("\n\n")[0])
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--experiments", default="vlm,textcls,retrieval")
    p.add_argument("--out", default="reports/eval_all")
    p.add_argument("--title", default="Evaluation report")
    p.add_argument("--no-log", action="store_true", help="do not record the report as an MLflow run")
    a = p.parse_args(argv)
    uri = a.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root()}/mlruns.db"
    try:
        linked = build(uri, a.experiments.split(","), Path(a.out), a.title, log=not a.no_log)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {Path(a.out).with_suffix('.md')} and {Path(a.out).with_suffix('.html')} from runs {linked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
