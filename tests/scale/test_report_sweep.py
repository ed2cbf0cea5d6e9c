"""The tuning log end to end: a LoRA-rank sweep from the command line, then ``make report`` on its runs."""

from __future__ import annotations

import csv
import re
import shlex
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from common import report as report_mod
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
    # PYTHONPATH: the report runs outside the checkout (cwd tmp_path) and must still be this checkout's code
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}", "MLFLOW_ARTIFACT_ROOT": str(tmp_path / "art"),
           "PYTHONPATH": str(ROOT)}
    sweep_dir = tmp_path / "sweep"
    sweep = run_cli(
        "-m", "vlm.train", "-m", "+exp=lora", "model.lora.r=16,32", "run.name='lora_r${model.lora.r}'",
        "run.note='half r'", *FAST, f"hydra.sweep.dir={sweep_dir}", f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.cache_dir={scale_cache}", env=env,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name[0].isdigit()) == ["0_lora_r16", "1_lora_r32"]

    argv = _make_report_argv("EXP=vlm", "ARGS=--sweep latest --baseline lora_r32")
    assert argv[2:] == ["common.report", "--experiment", "vlm", "--out", "reports/vlm_runs", "--sweep", "latest",
                        "--baseline", "lora_r32"]
    report = subprocess.run(argv, cwd=tmp_path, env={**env, "PATH": ""}, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr

    header, *rows = _markdown_rows(report.stdout)
    vlm = package_cfg("vlm")
    recalls = list(vlm.report_metrics)
    labels = [vlm.report_labels[m] for m in recalls]
    assert len(recalls) == 6 and all(m.endswith("_recall") for m in recalls) and "ALL TRAIN LOGO RECALL" in labels
    assert len(rows) == 2
    assert header.count("model.lora.r") == 1 and header[-13:] == [*labels, *[f"Δ {x}" for x in labels], "mlflow"]
    col = header.index("model.lora.r")
    assert [r[0] for r in rows] == ["lora_r16", "lora_r32"] and [r[col] for r in rows] == ["16", "32"]  # job order
    assert all(r[header.index("status")] == "FINISHED" and r[1] == "half r" for r in rows)
    # train recalls on data.train_eval_size=24 images, not the whole train split: the report says so
    assert all(re.fullmatch(r"24 of \d+", r[header.index("train eval")]) for r in rows)

    # the numbers are those of the sweep's child runs in the store (percent, one decimal), deltas against r=32
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    parent = (sweep_dir / "mlflow_parent_run_id").read_text().strip()
    exp = client.get_experiment_by_name("vlm")
    children = {c.info.run_name: c for c in client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")}
    assert sorted(children) == ["lora_r16", "lora_r32"]
    base = children["lora_r32"].data.metrics
    for r in rows:
        run = children[r[0]]
        assert run.data.params["model.lora.r"] == r[col]
        assert r[-13:-7] == [f"{100 * run.data.metrics[m]:.1f}" for m in recalls]
        assert r[-7:-1] == [report_mod.fmt_delta(run.data.metrics[m] - base[m], True) for m in recalls]
        assert r[-1].startswith(f"[{run.info.run_id[:8]}](http") and run.info.run_id in r[-1]
    assert rows[1][-7:-1] == ["="] * 6  # the baseline against itself

    # the files `make report` leaves: the same table as Markdown and as CSV
    out = tmp_path / "reports" / "vlm_runs"
    assert out.with_suffix(".md").read_text() == report.stdout.rstrip("\n") + "\n"
    with out.with_suffix(".csv").open(newline="") as f:
        csv_header, *csv_rows = list(csv.reader(f))
    assert csv_header == header
    for r, c in zip(rows, csv_rows, strict=True):  # the CSV at full precision: the logged values, the full link
        run = children[r[0]]
        assert c[:-13] == r[:-13]
        assert [float(x) for x in c[-13:-7]] == [run.data.metrics[m] for m in recalls]
        assert [float(x) for x in c[-7:-1]] == [run.data.metrics[m] - base[m] for m in recalls]
        assert c[-1].endswith(f"/runs/{run.info.run_id}")

    # --varying-only: r is the one override column; what every job shares is one line above the table
    narrow = subprocess.run([*argv[:3], "--experiment", "vlm", "--sweep", "latest", "--varying-only"], cwd=tmp_path,
                            env=env, capture_output=True, text=True)
    assert narrow.returncode == 0, narrow.stderr
    note = next(x for x in narrow.stdout.splitlines() if x.startswith("Same in every row: "))
    assert note.startswith("Same in every row: ") and "`exp=lora`" in note and "`data.batch_size=16`" in note
    n_header, *n_rows = _markdown_rows(narrow.stdout)
    nb = header.index("train eval") + 1  # name, note, started, status, epochs, device, train eval
    assert n_header == [*header[:nb], "model.lora.r", *labels, "mlflow"]
    assert n_rows == [[*r[:nb], r[col], *r[-13:-7], r[-1]] for r in rows]
