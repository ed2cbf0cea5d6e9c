"""The run helper end to end on the toy task, with a real sqlite MLflow store."""

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from common import run
from common.errors import ConfigError
from tests.conftest import run_cli


def _run_of(output_dir: Path, uri: str):
    run_id = (output_dir / "mlflow_run_id").read_text().strip()
    return MlflowClient(tracking_uri=uri).get_run(run_id)


def test_train_logs_a_complete_run(toy_cfg, mlflow_uri, tmp_path):
    cfg = toy_cfg("trainer.max_epochs=3")
    value = run.train(cfg)
    out = Path(cfg.paths.output_dir)
    r = _run_of(out, mlflow_uri)
    assert r.info.status == "FINISHED"
    assert value == pytest.approx(r.data.metrics["val/loss"])
    # params: the flattened resolved config
    assert r.data.params["module.lr"] == "0.05" and r.data.params["trainer.max_epochs"] == "3"
    # metrics per epoch, not only the last value
    history = MlflowClient(tracking_uri=mlflow_uri).get_metric_history(r.info.run_id, "train/loss")
    assert len(history) == 3 and history[-1].value < history[0].value
    assert "test/loss" in r.data.metrics
    # tags: git, fingerprint, task
    assert r.data.tags["task"] == "toy.train" and len(r.data.tags["data_fingerprint"]) == 16
    assert "git_dirty" in r.data.tags or "git_commit" not in r.data.tags
    # artifacts: resolved config + metrics, downloadable
    client = MlflowClient(tracking_uri=mlflow_uri)
    names = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"config.yaml", "metrics.json"} <= names
    conf = yaml.safe_load(Path(client.download_artifacts(r.info.run_id, "config.yaml", str(tmp_path))).read_text())
    assert conf["module"]["lr"] == 0.05
    assert json.loads((out / "metrics.json").read_text())["test/loss"] == pytest.approx(r.data.metrics["test/loss"])
    assert (out / "checkpoints" / "last.ckpt").exists()


def test_same_seed_same_metrics(toy_cfg):
    a = run.train(toy_cfg("logger=none", "callbacks=none", "+trainer.enable_progress_bar=false"))
    b = run.train(toy_cfg("logger=none", "callbacks=none", "+trainer.enable_progress_bar=false"))
    assert a == b


def test_failing_job_ends_its_run_failed(toy_cfg, mlflow_uri):
    cfg = toy_cfg("module.fail=true")
    with pytest.raises(RuntimeError, match="told to fail"):
        run.train(cfg)
    assert _run_of(Path(cfg.paths.output_dir), mlflow_uri).info.status == "FAILED"


def test_nan_loss_stops_with_a_message(toy_cfg):
    with pytest.raises(FloatingPointError, match=r"training loss is nan at epoch 0, batch 3"):
        run.train(toy_cfg("module.nan_at_step=3", "logger=none"))


def test_resume_after_a_kill_matches_an_uninterrupted_run(toy_cfg, tmp_path, mlflow_uri, monkeypatch):
    base = ["callbacks.early_stopping=null", "callbacks.progress_bar=null", "trainer.max_epochs=4"]
    full = run.train(toy_cfg(*base, f"paths.log_dir={tmp_path / 'full'}"))

    killed = toy_cfg(*base, f"paths.log_dir={tmp_path / 'resume'}")
    monkeypatch.setenv("TOY_KILL_AT_STEP", "12")  # 5 batches an epoch: dies in epoch 2
    with pytest.raises(RuntimeError, match="simulated kill"):
        run.train(killed)
    monkeypatch.delenv("TOY_KILL_AT_STEP")
    killed_out = Path(killed.paths.output_dir)
    assert _run_of(killed_out, mlflow_uri).info.status == "FAILED"

    resumed = toy_cfg(*base, f"paths.log_dir={tmp_path / 'resume'}", "ckpt_path=last")
    assert run.resolve_ckpt_path(resumed) == (
        str(killed_out / "checkpoints" / "last.ckpt"),
        (killed_out / "mlflow_run_id").read_text(),
    )
    assert run.train(resumed) == full  # bit-identical: weights, optimizer, loops and RNG restored
    r = _run_of(Path(resumed.paths.output_dir), mlflow_uri)
    assert r.info.run_id == (killed_out / "mlflow_run_id").read_text() and r.info.status == "FINISHED"


def test_ckpt_path_errors(toy_cfg, tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path: no checkpoint file at"):
        run.resolve_ckpt_path(toy_cfg(f"ckpt_path={tmp_path}/none.ckpt"))
    with pytest.raises(ConfigError, match="ckpt_path=last: no earlier toy.train run"):
        run.resolve_ckpt_path(toy_cfg("ckpt_path=last"))


def test_optimized_metric_must_be_logged(toy_cfg):
    with pytest.raises(ConfigError, match="optimized_metric: 'val/acc' was not logged"):
        run.train(toy_cfg("optimized_metric=val/acc", "logger=none", "callbacks=none"))


def test_multirun_parent_children_and_a_failing_job(tmp_path, mlflow_uri):
    sweep = tmp_path / "sweep"
    res = run_cli(
        "-m", "tests.common.toy.train", "-m", "module.fail=false,true,false", "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path}", f"logger.mlflow.tracking_uri={mlflow_uri}",
        f"logger.mlflow.artifact_location={tmp_path}/art", "callbacks.progress_bar=null",
    )
    # the sweep finishes every job and still exits non-zero, naming the failed job
    assert res.returncode != 0
    assert "1 sweep job(s) failed" in res.stderr and "job 1 (module.fail=True" in res.stderr
    assert sorted(p.name for p in (sweep / "failed_jobs").iterdir()) == ["1.txt"]
    client = MlflowClient(tracking_uri=mlflow_uri)
    parent_id = (sweep / "mlflow_parent_run_id").read_text().strip()
    parent = client.get_run(parent_id)
    assert parent.info.status == "FAILED" and parent.data.tags["failed_jobs"] == "1"
    exp = client.get_experiment_by_name("toy")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    status = {c.data.tags["job_num"]: c.info.status for c in children}
    assert status == {"0": "FINISHED", "1": "FAILED", "2": "FINISHED"}
    assert all((sweep / n / "metrics.json").exists() for n in ("0", "2"))


def test_optuna_sweep_runs_trials(tmp_path, mlflow_uri):
    res = run_cli(
        "-m", "tests.common.toy.train", "hparams_search=toy_optuna", "trainer.max_epochs=1",
        f"hydra.sweep.dir={tmp_path}/sweep", f"paths.log_dir={tmp_path}", "logger=none", "callbacks.progress_bar=null",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert 0.01 <= best["best_params"]["module.lr"] <= 0.2
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.name.isdigit()) == ["0", "1", "2"]


def test_single_run_from_the_command_line(tmp_path, mlflow_uri):
    res = run_cli(
        "-m", "tests.common.toy.train", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}/run",
        f"paths.log_dir={tmp_path}", f"logger.mlflow.tracking_uri={mlflow_uri}",
        f"logger.mlflow.artifact_location={tmp_path}/art", "callbacks.progress_bar=null",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    r = _run_of(tmp_path / "run", mlflow_uri)
    assert r.info.status == "FINISHED" and r.info.run_name == "toy.train trainer.max_epochs=1 callbacks.progress_bar=null"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test/loss"] == pytest.approx(r.data.metrics["test/loss"])


def _toy_cli_args(tmp_path, mlflow_uri, *args) -> list[str]:
    return [f"paths.log_dir={tmp_path}/logs", f"logger.mlflow.tracking_uri={mlflow_uri}",
            "logger.mlflow.experiment_name=toy_named", f"logger.mlflow.artifact_location={tmp_path}/art", *args]


def _toy_cli(tmp_path, mlflow_uri, *args, stdout=None):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    cmd = [sys.executable, "-m", "tests.common.toy.train", *_toy_cli_args(tmp_path, mlflow_uri, *args)]
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ}, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=600)


def test_run_name_and_note_repeated_name_gets_a_suffix(tmp_path, mlflow_uri):
    from tests.reliability.harness import call

    args = ["trainer.max_epochs=1", "run.name=base_${trainer.max_epochs}", "run.note='r halved: r=64, alpha=128'",
            "callbacks.progress_bar=null"]
    # the first run in this process (imports paid once), the second from the command line: the name is looked up
    # in the store, whichever process wrote it; seconds apart, so the two run dirs' timestamps differ
    first = call("tests.common.toy.train", *_toy_cli_args(tmp_path, mlflow_uri, *args))
    assert first.code == 0, first.stderr[-2000:]
    res = _toy_cli(tmp_path, mlflow_uri, *args)
    assert res.returncode == 0, res.stderr[-2000:]
    dirs = sorted((tmp_path / "logs" / "toy.train" / "runs").iterdir())
    assert len(dirs) == 2 and all(d.name.endswith("_base_1") for d in dirs)  # the run dir carries the name
    names = [_run_of(d, mlflow_uri).info.run_name for d in dirs]
    assert names == ["base_1", "base_1-2"]  # never two runs with one name
    assert {_run_of(d, mlflow_uri).data.tags["mlflow.note.content"] for d in dirs} == {"r halved: r=64, alpha=128"}


def test_stdout_to_a_file_gets_one_line_per_epoch(tmp_path, mlflow_uri):
    import re

    out = tmp_path / "stdout.txt"
    with out.open("w") as f:
        res = _toy_cli(tmp_path, mlflow_uri, "trainer.max_epochs=3", stdout=f)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = out.read_text().splitlines()
    epochs = [x for x in lines if re.search(r" - epoch \d+/3 · ", x)]
    assert [re.search(r"epoch (\d+)/3", x).group(1) for x in epochs] == ["1", "2", "3"]
    assert all("train/loss" in x and "val/loss" in x for x in epochs)
    assert "ETA" in epochs[0] and "ETA" not in epochs[-1]
    assert any(" - test: test/loss " in x for x in lines)
    # the same lines in the run log a person tails
    (log,) = (tmp_path / "logs" / "toy.train" / "runs").glob("*/toy.train.log")
    assert [x for x in log.read_text().splitlines() if " - epoch " in x] == epochs
