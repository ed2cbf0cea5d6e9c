from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

import common.config  # noqa: F401  (resolvers)
from common.compose import compose_run

TOY_CONF = Path(__file__).parent / "toy" / "conf"


@pytest.fixture
def toy_cfg(tmp_path, mlflow_uri):
    """``toy_cfg(*overrides)`` composes the toy primary config writing under ``tmp_path``."""

    counter = itertools.count()

    def make(*overrides: str, conf_dir: Path = TOY_CONF, name: str = "train"):
        """Like the CLI: a fresh run dir under ``paths.log_dir`` with ``.hydra/overrides.yaml``."""
        logs = [f"paths.log_dir={tmp_path / 'logs'}"]
        if "logger=none" not in overrides and "logger=csv" not in overrides:
            logs += [f"logger.mlflow.tracking_uri={mlflow_uri}", f"logger.mlflow.artifact_location={tmp_path / 'artifacts'}"]
        cfg = compose_run(conf_dir, [*logs, *overrides], lambda c, n=next(counter): Path(c.paths.log_dir) / c.task_name / "runs" / f"{n:02d}", name)
        return cfg

    yield make
    GlobalHydra.instance().clear()
