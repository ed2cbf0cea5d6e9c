from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

import common.config  # noqa: F401  (resolvers)
from common.compose import compose_run
from tests.conftest import ROOT

CONF = ROOT / "conf" / "retrieval"

# Small enough for CPU tests, big enough to learn: 70 products in pairs, 3 epochs.
TINY = ["data.synth.n_groups=70", "data.synth.max_per_group=2", "data.batch_size=16", "trainer.max_epochs=3",
        "callbacks.early_stopping=null", "optim.lr=0.003", "callbacks.progress_bar=null"]


def compose_cfg(tmp_path: Path, mlflow_uri: str | None, *overrides: str, name: str = "train"):
    """The retrieval config as the CLI composes it, writing under ``tmp_path``."""
    log = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp_path.parent / 'retrieval_cache'}"]
    if mlflow_uri:
        log += [f"logger.mlflow.tracking_uri={mlflow_uri}", f"logger.mlflow.artifact_location={tmp_path / 'art'}"]
    cfg = compose_run(CONF, [*log, *overrides], tmp_path / "run", name)
    return cfg


@pytest.fixture(scope="session")
def trained(tmp_path_factory, mlflow_uri):
    """One default-config training run (tiny sizes), shared by the tests that need a trained model."""
    from common import run
    from retrieval.build import SCHEMAS, build

    tmp = tmp_path_factory.mktemp("retrieval_train")
    cfg = compose_cfg(tmp, mlflow_uri, *TINY)
    run.train(cfg, build=build, schemas=SCHEMAS)
    GlobalHydra.instance().clear()
    out = Path(cfg.paths.output_dir)
    return {"cfg": cfg, "out": out, "tmp": tmp}


_counter = itertools.count()
