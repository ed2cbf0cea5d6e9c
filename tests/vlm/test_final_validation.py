"""conf/vlm/train.yaml validates every 5 epochs; a run whose max_epochs is not a multiple of that (a short
``trainer.max_epochs=3``, a sweep trial) still validates on its last epoch, so ``optimized_metric`` (val/score)
is logged from the final weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from common import run
from vlm.build import build
from vlm.schemas import SCHEMAS

QUIET = ["callbacks.progress_bar=null", "+trainer.enable_progress_bar=false", "+trainer.num_sanity_val_steps=0"]


@pytest.mark.parametrize(("epochs", "every", "validations"), [(2, None, 1), (3, 2, 2)])
def test_validation_runs_on_the_final_epoch(vlm_cfg, mlflow_uri, epochs, every, validations):
    cfg = vlm_cfg(*QUIET, f"trainer.max_epochs={epochs}",
                  *([f"trainer.check_val_every_n_epoch={every}"] if every else []))
    assert cfg.optimized_metric == "val/score"
    assert epochs % cfg.trainer.check_val_every_n_epoch != 0

    score = run.train(cfg, build=build, schemas=SCHEMAS)  # raised "'val/score' was not logged" before

    out = Path(cfg.paths.output_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    assert score == metrics["val/score"]
    client = MlflowClient(tracking_uri=mlflow_uri)
    run_id = (out / "mlflow_run_id").read_text().strip()
    steps = [m.step for m in client.get_metric_history(run_id, "val/score")]
    final_step = max(m.step for m in client.get_metric_history(run_id, "train/loss_epoch"))
    assert len(steps) == validations and max(steps) == final_step, (steps, final_step)
