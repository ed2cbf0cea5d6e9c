"""The tuning log end to end: a LoRA-rank sweep from the command line, then ``make report`` on its runs."""

from __future__ import annotations

import csv
import shlex
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from tests.conftest import ROOT, run_cli
from tests.scale.conftest import package_cfg
from tests.vlm.conftest import TINY

# Validation every epoch: checkpoints and the sweep's optimized metric watch val/score (by default only every
# 5th epoch, which a 1-epoch run never reaches).
FAST = [*TINY, "trainer.check_val_every_n_epoch=1", "callbacks.progress_bar=null"]


def _make_report_argv(*make_args: str) -> list[str]:
    """The command ``make report ...`` runs (read from the Makefile with ``make -n``), on this interpreter."""
    out = subprocess.run(["make", "-n", "report", *make_args], cwd=ROOT, capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if "-m common.report" in x)
    argv = shlex.split(line)
    return [sys.executable, *argv[1:]]


def _markdown_rows(md: str) -> list[list[str]]:
    lines = [x for x in md.strip().splitlines() if x.startswith("|")]
    assert set(lines[1].strip("|").split("|")) == {"---"}
    return [[c.strip() for c in x.strip().strip("|").split("|")] for x in [lines[0], *lines[2:]]]


@pytest.mark.slow
def test_lora_rank_sweep_then_make_report(tmp_path, scale_cache):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}", "MLFLOW_ARTIFACT_ROOT": str(tmp_path / "art")}
    sweep_dir = tmp_path / "sweep"
    sweep = run_cli(
        "-m", "vlm.train", "-m", "+exp=lora", "model.lora.r=16,32,64", *FAST, f"hydra.sweep.dir={sweep_dir}",
        f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={scale_cache}", env=env,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]

    argv = _make_report_argv("EXP=vlm", "ARGS=--sweep latest")
    assert argv[2:] == ["common.report", "--experiment", "vlm", "--out", "reports/vlm_runs", "--sweep", "latest"]
    report = subprocess.run(argv, cwd=tmp_path, env={**env, "PATH": ""}, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr

    header, *rows = _markdown_rows(report.stdout)
    recalls = list(package_cfg("vlm").report_metrics)
    assert len(recalls) == 6 and all(m.endswith("_recall") for m in recalls)
    assert len(rows) == 3
    assert header.count("model.lora.r") == 1 and header[-6:] == recalls
    col = header.index("model.lora.r")
    assert [r[col] for r in rows] == ["16", "32", "64"]  # in job order
    assert all(r[header.index("status")] == "FINISHED" for r in rows)

    # the numbers are those of the sweep's child runs in the store, one row per job
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    parent = (sweep_dir / "mlflow_parent_run_id").read_text().strip()
    exp = client.get_experiment_by_name("vlm")
    children = {c.info.run_id[:8]: c for c in client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")}
    assert sorted(children) == sorted(r[0] for r in rows)
    for r in rows:
        run = children[r[0]]
        assert run.data.params["model.lora.r"] == r[col]
        assert r[-6:] == [f"{run.data.metrics[m]:.4f}" for m in recalls]

    # the files `make report` leaves: the same table as Markdown and as CSV
    out = tmp_path / "reports" / "vlm_runs"
    assert out.with_suffix(".md").read_text() == report.stdout.rstrip("\n") + "\n"
    with out.with_suffix(".csv").open(newline="") as f:
        assert list(csv.reader(f)) == [header, *rows]

    # --varying-only: r is the one override column; what every job shares is one line above the table
    narrow = subprocess.run([*argv[:3], "--experiment", "vlm", "--sweep", "latest", "--varying-only"], cwd=tmp_path,
                            env=env, capture_output=True, text=True)
    assert narrow.returncode == 0, narrow.stderr
    note = narrow.stdout.splitlines()[0]
    assert note.startswith("Same in every row: ") and "`exp=lora`" in note and "`data.batch_size=16`" in note
    n_header, *n_rows = _markdown_rows(narrow.stdout)
    assert n_header == ["run", "started", "status", "model.lora.r", *recalls]
    assert n_rows == [[*r[:3], r[col], *r[-6:]] for r in rows]
