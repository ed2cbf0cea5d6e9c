from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

import common.config  # noqa: F401  (resolvers)
from tests.conftest import ROOT

CONF = ROOT / "conf" / "retrieval"

# Small enough for CPU tests, big enough to learn: 70 products in pairs, 3 epochs.
TINY = ["data.synth.n_groups=70", "data.synth.max_per_group=2", "data.batch_size=16", "trainer.max_epochs=3",
        "callbacks.early_stopping=null", "optim.lr=0.003", "callbacks.progress_bar=null"]


def compose_cfg(tmp_path: Path, mlflow_uri: str | None, *overrides: str, name: str = "train"):
    """The retrieval config as the CLI composes it, writing under ``tmp_path``."""
    GlobalHydra.instance().clear()
    log = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp_path.parent / 'retrieval_cache'}"]
    if mlflow_uri:
        log += [f"logger.mlflow.tracking_uri={mlflow_uri}", f"logger.mlflow.artifact_location={tmp_path / 'art'}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=[*log, *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    out = tmp_path / "run"
    (out / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(list(cfg.hydra.overrides.task)), out / ".hydra" / "overrides.yaml")
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        del cfg["hydra"]
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
