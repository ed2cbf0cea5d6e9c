"""Shared fixtures: compose textcls configs like the CLI does, and train one small tagger per session."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

import common.config  # noqa: F401  (resolvers)
from common.compose import compose_run

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf" / "textcls"
# Small but meaningful: 1,600 synthetic articles, a narrower TextCNN, 3 epochs (CPU seconds, not minutes).
SMALL = [
    "data.synth.n=1600", "model.num_kernels=32", "model.embedding_dim=32", "trainer.max_epochs=3", "optim.lr=0.003",
    "callbacks.progress_bar=null", "callbacks.early_stopping=null",
]
_counter = itertools.count()


def compose_cfg(tmp: Path, *overrides: str, mlflow_uri: str | None = None, name: str = "train"):
    """The composed primary config with a fresh run dir under ``tmp`` (as the CLI would make)."""
    logger = [f"logger.mlflow.tracking_uri={mlflow_uri}", f"logger.mlflow.artifact_location={tmp / 'artifacts'}"] if mlflow_uri else ["logger=none"]
    cfg = compose_run(CONF, [f"paths.log_dir={tmp / 'logs'}", *logger, *overrides], lambda c, n=next(_counter): Path(c.paths.log_dir) / c.task_name / "runs" / f"{n:02d}", name)
    return cfg


@pytest.fixture(scope="session")
def trained(tmp_path_factory, mlflow_uri):
    """One default (hierarchical TextCNN, pos_weight + tuned thresholds) run on small synthetic data."""
    from common import run
    from textcls.build import SCHEMAS, build

    tmp = tmp_path_factory.mktemp("textcls")
    cfg = compose_cfg(tmp, *SMALL, mlflow_uri=mlflow_uri)
    value = run.train(cfg, build=build, schemas=SCHEMAS)
    GlobalHydra.instance().clear()
    return {"cfg": cfg, "value": value, "out": Path(cfg.paths.output_dir), "tmp": tmp}
