"""Runs back out of MLflow as the tuning log the team used to keep by hand.

One row per run (sweep children included, sweep parents left out): its name and note, when it ran (UTC), its
status, epochs and device, one column per override key that any of the runs set, the chosen metrics under the
package's labels (rates in percent with one decimal by default), with ``--baseline`` a column of changes against
one run per metric, and a link to the run's MLflow page. Markdown for reading and pasting, CSV (full precision)
for spreadsheets::

    python -m common.report --experiment vlm --sweep latest --baseline lora_r32 --out reports/vlm
"""

from __future__ import annotations

import argparse
import csv
import io as _io
import json
import math
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from common import io
from common.errors import UserError
from common.tracking import NOTE_TAG, shown_overrides

FORMATS = ("percent", "fraction")
DEFAULT_UI = "http://127.0.0.1:5000"  # `make ui` (Makefile PORT)
ID_CHARS = 8  # of a run id shown as the link text


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]  # as shown (Markdown)
    fixed: dict[str, str] = field(default_factory=dict)  # overrides left out as columns: the same in every row
    raw: list[list[str]] | None = None  # the same cells at full precision (CSV); None: ``rows``
    notes: list[str] = field(default_factory=list)  # lines above the table

    def markdown(self) -> str:
        lines = list(self.notes)
        if self.fixed:
            lines.append("Same in every row: " + " ".join(f"`{k}={v}`" for k, v in self.fixed.items()))
        note = "".join(f"{x}\n\n" for x in lines)
        head = "| " + " | ".join(self.columns) + " |\n|" + "|".join("---" for _ in self.columns) + "|\n"
        return note + head + "".join("| " + " | ".join(_cell(c) for c in r) + " |\n" for r in self.rows)

    def csv(self) -> str:
        buf = _io.StringIO()
        w = csv.writer(buf)
        w.writerow(self.columns)
        w.writerows(self.raw if self.raw is not None else self.rows)
        return buf.getvalue()


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _overrides(tags: dict) -> dict[str, str]:
    out = {}
    for item in shown_overrides(json.loads(tags.get("overrides") or "[]")):
        key, _, value = item.partition("=")
        out[key.lstrip("+~")] = value
    return out


def is_rate(name: str, values: list[float | None]) -> bool:
    """Recalls, precisions, F1s ...: every value in [0, 1] and not a loss."""
    if "loss" in name or "perplexity" in name:
        return False
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return bool(finite) and all(0.0 <= v <= 1.0 for v in finite)


def fmt_value(value: float | None, rate: bool, style: str = "percent") -> str:
    """``92.3`` (percent, one decimal), ``0.923`` (fraction) for rates; four significant digits otherwise."""
    if value is None:
        return ""
    if not math.isfinite(value):
        return "n/a"
    if rate:
        return f"{100 * value:.1f}" if style == "percent" else f"{value:.3f}"
    return f"{value:.4g}"


def fmt_delta(delta: float | None, rate: bool, style: str = "percent") -> str:
    """``↑1.2`` / ``↓0.5`` in the units of :func:`fmt_value` (percentage points for percent), ``=`` when it
    rounds to nothing."""
    if delta is None or not math.isfinite(delta):
        return ""
    shown = fmt_value(abs(delta), rate, style)
    if float(shown) == 0:
        return "="
    return ("↑" if delta > 0 else "↓") + shown


def run_link(ui: str, experiment_id: str, run_id: str) -> str:
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _labels(runs) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in runs:
        out.update(json.loads(r.data.tags.get("report_labels") or "{}"))
    return out


def _baseline(runs, shown, ref: str):
    """The run ``ref`` names: a run id (or its first 8+ characters) or a run name, looked for first among the
    rows shown, then in the whole experiment (the newest of several with that name)."""
    for pool in (shown, runs):
        by_id = [r for r in pool if r.info.run_id == ref or (len(ref) >= ID_CHARS and r.info.run_id.startswith(ref))]
        by_name = [r for r in pool if r.info.run_name == ref]
        if by_id or by_name:
            return (by_id or by_name)[-1]
    names = sorted({r.info.run_name for r in shown if r.info.run_name})
    raise UserError(f"--baseline {ref}: no run with that name or id; names shown: {', '.join(names) or 'none'}")


def runs_table(
    tracking_uri: str,
    experiment: str,
    metrics: list[str] | None = None,
    filter_string: str = "",
    sweep: str | None = None,
    tags: dict[str, str] | None = None,
    since: datetime | None = None,
    varying_only: bool = False,
    baseline: str | None = None,
    style: str = "percent",
    ui: str | None = None,
) -> Table:
    """Table of runs in ``experiment``; ``sweep`` keeps the children of one sweep (its dir, parent run id
    or ``latest``); ``tags`` keeps runs with those tag values; ``since`` keeps runs started after it;
    ``varying_only`` turns override columns with one value in every row into a line above the table;
    ``baseline`` (a run name or id) adds a change column per metric; ``style``: ``percent`` or ``fraction``
    for rates; ``ui``: the MLflow UI the links point at (default: the tracking server, else ``make ui``'s)."""
    from mlflow import MlflowClient

    if style not in FORMATS:
        raise UserError(f"--format: {style!r} is not one of {', '.join(FORMATS)}")
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise UserError(f"no MLflow experiment named {experiment!r} in {tracking_uri}")
    every = client.search_runs([exp.experiment_id], filter_string=filter_string, order_by=["attributes.start_time ASC"],
                               max_results=5000)
    parents = [r for r in every if r.data.tags.get("is_sweep_parent") == "true"]
    runs = every
    if sweep:
        if sweep == "latest":
            if not parents:
                raise UserError(f"--sweep latest: experiment {experiment!r} has no sweep")
            parent_id = parents[-1].info.run_id
        else:
            match = [p for p in parents if sweep in (p.info.run_id, p.data.tags.get("sweep_dir"))]
            if not match:
                raise UserError(f"--sweep {sweep}: no sweep with that run id or directory")
            parent_id = match[-1].info.run_id
        runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    every = [r for r in every if r.data.tags.get("is_sweep_parent") != "true"]
    runs = [r for r in runs if r.data.tags.get("is_sweep_parent") != "true"]
    for key, value in (tags or {}).items():
        runs = [r for r in runs if r.data.tags.get(key) == value]
    if since is not None:
        cutoff = since.timestamp() * 1000
        runs = [r for r in runs if r.info.start_time >= cutoff]
    base = _baseline(every, runs, baseline) if baseline else None

    overrides = [_overrides(r.data.tags) for r in runs]
    keys = sorted({k for o in overrides for k in o})
    fixed = {}
    if varying_only and len(runs) > 1:
        fixed = {k: overrides[0][k] for k in keys if all(k in o and o[k] == overrides[0][k] for o in overrides)}
        keys = [k for k in keys if k not in fixed]
    if metrics is None:  # what the packages asked for (config key report_metrics), else every test/* metric
        wanted = [json.loads(r.data.tags.get("report_metrics") or "[]") for r in runs]
        metrics = list(dict.fromkeys(m for w in wanted for m in w)) or sorted(
            {m for r in runs for m in r.data.metrics if m.startswith("test/")}
        )
    labels = _labels(runs)
    rate = {m: is_rate(m, [r.data.metrics.get(m) for r in [*runs, *([base] if base else [])]]) for m in metrics}
    subset = any(r.data.tags.get("train_eval_subset") for r in runs)
    ui = ui or (tracking_uri if tracking_uri.startswith(("http://", "https://")) else DEFAULT_UI)

    columns = ["run", "note", "started (UTC)", "status", "epochs", "device", *(["train eval"] if subset else []),
               *keys, *[labels.get(m, m) for m in metrics]]
    if base is not None:
        columns += [f"Δ {labels.get(m, m)}" for m in metrics]
    columns.append("mlflow")
    rows, raw = [], []
    for r, ov in zip(runs, overrides, strict=True):
        t = r.data.tags
        started = datetime.fromtimestamp(r.info.start_time / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        epochs = t.get("epochs") or ""
        device = t.get("device") or r.data.params.get("trainer.accelerator", "")
        head = [r.info.run_name or r.info.run_id[:ID_CHARS], t.get(NOTE_TAG, ""), started, r.info.status, epochs, device,
                *([t.get("train_eval_subset", "all")] if subset else []), *[ov.get(k, "") for k in keys]]
        values = [r.data.metrics.get(m) for m in metrics]
        deltas = []
        if base is not None:
            deltas = [None if v is None or base.data.metrics.get(m) is None else v - base.data.metrics[m]
                      for m, v in zip(metrics, values, strict=True)]
        link = run_link(ui, exp.experiment_id, r.info.run_id)
        rows.append([*head, *[fmt_value(v, rate[m], style) for m, v in zip(metrics, values, strict=True)],
                     *[fmt_delta(d, rate[m], style) for m, d in zip(metrics, deltas, strict=False)],
                     f"[{r.info.run_id[:ID_CHARS]}]({link})"])
        raw.append([*head, *["" if v is None else repr(v) for v in values], *["" if d is None else repr(d) for d in deltas],
                    link])
    notes = []
    if any(rate.values()):
        notes.append("Rates in percent." if style == "percent" else "Rates as fractions.")
    if base is not None:
        unit = "percentage points" if style == "percent" else "fraction"
        notes.append(f"Δ: against baseline `{base.info.run_name}` (run {base.info.run_id[:ID_CHARS]}); rates in {unit}.")
    return Table(columns, rows, fixed, raw, notes)


def main(argv: list[str] | None = None) -> int:
    from common.config import project_root

    p = argparse.ArgumentParser(prog="python -m common.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///<project>/mlruns.db")
    p.add_argument("--experiment", required=True, help="vlm | textcls | retrieval (the MLflow experiment)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated metric names (default: the runs' report_metrics, the package's config key; "
                        "without one, every test/* metric)")
    p.add_argument("--sweep", default=None, help="'latest', a sweep dir or its parent run id")
    p.add_argument("--baseline", default=None, help="a run name or id: add a column per metric with the change (↑/↓) against it")
    p.add_argument("--format", default="percent", choices=FORMATS, dest="style",
                   help="rates (recalls, F1s) as percent with one decimal (default) or fractions with three")
    p.add_argument("--ui", default=None, help=f"MLflow UI the links point at (default: the tracking server, else {DEFAULT_UI})")
    p.add_argument("--tag", action="append", default=[], help="key=value, repeatable")
    p.add_argument("--since", default=None, help="YYYY-MM-DD (UTC)")
    p.add_argument("--filter", default="", help="an MLflow search filter string")
    p.add_argument("--varying-only", action="store_true",
                   help="override columns only for keys whose value differs between rows (the rest in one line)")
    p.add_argument("--out", default=None, help="write OUT.md and OUT.csv (full precision; atomically) besides printing")
    a = p.parse_args(argv)
    import os

    uri = a.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root()}/mlruns.db"
    try:
        tags = dict(t.split("=", 1) for t in a.tag)
        since = datetime.strptime(a.since, "%Y-%m-%d").replace(tzinfo=UTC) if a.since else None
        table = runs_table(uri, a.experiment, a.metrics.split(",") if a.metrics else None, a.filter, a.sweep, tags, since,
                           a.varying_only, a.baseline, a.style, a.ui)
    except (UserError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table.markdown())
    if a.out:
        io.write_text(Path(a.out).with_suffix(".md"), table.markdown())
        io.write_text(Path(a.out).with_suffix(".csv"), table.csv())
    return 0


if __name__ == "__main__":
    sys.exit(main())
