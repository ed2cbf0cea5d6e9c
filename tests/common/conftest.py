from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

import common.config  # noqa: F401  (resolvers)

TOY_CONF = Path(__file__).parent / "toy" / "conf"


@pytest.fixture
def toy_cfg(tmp_path, mlflow_uri):
    """``toy_cfg(*overrides)`` composes the toy primary config writing under ``tmp_path``."""

    counter = itertools.count()

    def make(*overrides: str, conf_dir: Path = TOY_CONF, name: str = "train"):
        """Like the CLI: a fresh run dir under ``paths.log_dir`` with ``.hydra/overrides.yaml``."""
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(
                name,
                overrides=[
                    f"paths.log_dir={tmp_path / 'logs'}",
                    f"logger.mlflow.tracking_uri={mlflow_uri}",
                    f"logger.mlflow.artifact_location={tmp_path / 'artifacts'}",
                    *overrides,
                ]
                if "logger=none" not in overrides and "logger=csv" not in overrides
                else [f"paths.log_dir={tmp_path / 'logs'}", *overrides],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        out = Path(cfg.paths.log_dir) / cfg.task_name / "runs" / f"{next(counter):02d}"
        (out / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(list(cfg.hydra.overrides.task)), out / ".hydra" / "overrides.yaml")
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
            del cfg["hydra"]
        return cfg

    yield make
    GlobalHydra.instance().clear()
