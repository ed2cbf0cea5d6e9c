"""``common.eval_cli.tracked_run``: the evaluation CLIs' MLflow run ends FINISHED, or FAILED when the body raises
(never left RUNNING), on a real sqlite MLflow store."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from common import eval_cli


def _cfg(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    return uri, OmegaConf.create({
        "task_name": "toy.eval",
        "paths": {"root_dir": str(tmp_path)},
        "data": "file.jsonl",
        "logger": {"mlflow": {"_target_": "lightning.pytorch.loggers.MLFlowLogger", "tracking_uri": uri,
                              "experiment_name": "toy", "artifact_location": str(tmp_path / "artifacts")}},
    })


def _runs(uri):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("toy")
    return client.search_runs([exp.experiment_id])


def test_a_failing_eval_body_leaves_the_run_failed(tmp_path):
    uri, cfg = _cfg(tmp_path)
    with pytest.raises(RuntimeError, match="scoring broke"), eval_cli.tracked_run(cfg, tags={"eval_data": "x"}) as loggers:
        loggers[0].log_metrics({"eval/f1": 0.5})
        raise RuntimeError("scoring broke")
    (run,) = _runs(uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["eval_data"] == "x" and run.data.metrics["eval/f1"] == 0.5


def test_a_successful_eval_body_finishes_the_run_with_its_config(tmp_path):
    uri, cfg = _cfg(tmp_path)
    with eval_cli.tracked_run(cfg, log_config=True) as loggers:
        loggers[0].log_metrics({"eval/f1": 1.0})
    (run,) = _runs(uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["data"] == "file.jsonl"
