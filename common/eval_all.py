"""``make eval-all``: every package's latest evaluation in one report.

For each package it looks for the newest FINISHED run of ``<package>.train`` in MLflow (its test stage is
the evaluation of the best checkpoint on the held-out split, with plots); when there is none it trains the
embedded default first (``python -m <package>.train``, a subprocess: ``common`` never imports the task
packages). Then :mod:`common.eval_report` writes ``reports/eval_all.{md,html}`` and records it as one
``eval-all`` run linking the runs it used.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from common import eval_report
from common.config import project_root
from common.errors import UserError


def has_finished_run(tracking_uri: str, package: str) -> bool:
    from mlflow import MlflowClient

    return eval_report.latest_run(MlflowClient(tracking_uri=tracking_uri), package) is not None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.eval_all", description=__doc__.split("\n\n")[0])
    p.add_argument("--packages", default="vlm,textcls,retrieval")
    p.add_argument("--out", default="reports/eval_all")
    p.add_argument("--retrain", action="store_true", help="train every package's default again first")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--train-module", default="{pkg}.train", help="module that trains a package's default")
    a = p.parse_args(argv)
    uri = a.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root()}/mlruns.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    packages = a.packages.split(",")
    for pkg in packages:
        if a.retrain or not has_finished_run(uri, pkg):
            print(f"[eval-all] {pkg}: no finished run yet, training the embedded default", flush=True)
            module = a.train_module.format(pkg=pkg)
            res = subprocess.run([sys.executable, "-m", module], env=env)
            if res.returncode != 0:
                print(f"error: python -m {module} failed (exit {res.returncode}); see its output above", file=sys.stderr)
                return res.returncode
        else:
            print(f"[eval-all] {pkg}: using its latest finished run", flush=True)
    try:
        linked = eval_report.build(uri, packages, Path(a.out), title="Evaluation report: " + ", ".join(packages))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[eval-all] wrote {Path(a.out).with_suffix('.md')} and {Path(a.out).with_suffix('.html')} from runs {linked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
