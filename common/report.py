"""Runs back out of MLflow as the tuning log the team used to keep by hand.

One row per run (sweep children included, sweep parents left out): when it ran, its status, one column per
override key that any of the runs set (the values that differ from the base config), then the chosen
metrics. Markdown for reading, CSV for spreadsheets::

    python -m common.report --experiment vlm --metrics test/logo_recall,test/none_recall --out reports/vlm
"""

from __future__ import annotations

import argparse
import csv
import io as _io
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from common import io
from common.errors import UserError
from common.tracking import shown_overrides


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    fixed: dict[str, str] = field(default_factory=dict)  # overrides left out as columns: the same in every row

    def markdown(self) -> str:
        note = ("Same in every row: " + " ".join(f"`{k}={v}`" for k, v in self.fixed.items()) + "\n\n") if self.fixed else ""
        head = "| " + " | ".join(self.columns) + " |\n|" + "|".join("---" for _ in self.columns) + "|\n"
        return note + head + "".join("| " + " | ".join(r) + " |\n" for r in self.rows)

    def csv(self) -> str:
        buf = _io.StringIO()
        w = csv.writer(buf)
        w.writerow(self.columns)
        w.writerows(self.rows)
        return buf.getvalue()


def _overrides(tags: dict) -> dict[str, str]:
    out = {}
    for item in shown_overrides(json.loads(tags.get("overrides") or "[]")):
        key, _, value = item.partition("=")
        out[key.lstrip("+~")] = value
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if value != value:  # NaN
        return "n/a"
    return f"{value:.4f}"


def runs_table(
    tracking_uri: str,
    experiment: str,
    metrics: list[str] | None = None,
    filter_string: str = "",
    sweep: str | None = None,
    tags: dict[str, str] | None = None,
    since: datetime | None = None,
    varying_only: bool = False,
) -> Table:
    """Table of runs in ``experiment``; ``sweep`` keeps the children of one sweep (its dir, parent run id
    or ``latest``); ``tags`` keeps runs with those tag values; ``since`` keeps runs started after it;
    ``varying_only`` turns override columns with one value in every row into a line above the table."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise UserError(f"no MLflow experiment named {experiment!r} in {tracking_uri}")
    runs = client.search_runs([exp.experiment_id], filter_string=filter_string, order_by=["attributes.start_time ASC"], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("is_sweep_parent") == "true"]
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
    runs = [r for r in runs if r.data.tags.get("is_sweep_parent") != "true"]
    for key, value in (tags or {}).items():
        runs = [r for r in runs if r.data.tags.get(key) == value]
    if since is not None:
        cutoff = since.timestamp() * 1000
        runs = [r for r in runs if r.info.start_time >= cutoff]

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
    columns = ["run", "started", "status", *keys, *metrics]
    rows = []
    for r, ov in zip(runs, overrides, strict=True):
        started = datetime.fromtimestamp(r.info.start_time / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        rows.append(
            [r.info.run_id[:8], started, r.info.status, *[ov.get(k, "") for k in keys], *[_fmt(r.data.metrics.get(m)) for m in metrics]]
        )
    return Table(columns, rows, fixed)


def main(argv: list[str] | None = None) -> int:
    from common.config import project_root

    p = argparse.ArgumentParser(prog="python -m common.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///<project>/mlruns.db")
    p.add_argument("--experiment", required=True, help="vlm | textcls | retrieval (the MLflow experiment)")
    p.add_argument("--metrics", default=None, help="comma-separated metric names (default: every test/* metric)")
    p.add_argument("--sweep", default=None, help="'latest', a sweep dir or its parent run id")
    p.add_argument("--tag", action="append", default=[], help="key=value, repeatable")
    p.add_argument("--since", default=None, help="YYYY-MM-DD")
    p.add_argument("--filter", default="", help="an MLflow search filter string")
    p.add_argument("--varying-only", action="store_true",
                   help="override columns only for keys whose value differs between rows (the rest in one line)")
    p.add_argument("--out", default=None, help="write OUT.md and OUT.csv (atomically) besides printing")
    a = p.parse_args(argv)
    import os

    uri = a.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root()}/mlruns.db"
    try:
        tags = dict(t.split("=", 1) for t in a.tag)
        since = datetime.strptime(a.since, "%Y-%m-%d").replace(tzinfo=UTC) if a.since else None
        table = runs_table(uri, a.experiment, a.metrics.split(",") if a.metrics else None, a.filter, a.sweep, tags, since,
                           a.varying_only)
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
