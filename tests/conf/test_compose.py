"""Every option of every shared config group composes, and the shared callbacks/loggers instantiate."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from common.config import validate

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / "conf"
TOY = ROOT / "tests" / "common" / "toy" / "conf"
PACKAGES = sorted(p.parent.name for p in SHARED.glob("*/train.yaml"))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (SHARED / group).glob("*.yaml"))


def _compose(conf_dir: Path, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(
    "group, option",
    [(g, o) for g in ("trainer", "logger", "callbacks", "paths") for o in options(g)],
)
def test_shared_group_option_composes(group, option):
    cfg = _compose(TOY, [f"{group}={option}", "paths.output_dir=/tmp/x"])
    assert cfg.package == "toy"
    if group == "trainer":
        assert cfg.trainer._target_ == "lightning.pytorch.Trainer"


@pytest.mark.parametrize("launcher", ["basic", "joblib", "slurm", "submitit_local"])
def test_launchers_compose(launcher):
    cfg = _compose(TOY, [f"hydra/launcher={launcher}", "paths.output_dir=/tmp/x"])
    assert cfg.hydra.launcher._target_


def test_optuna_search_composes():
    cfg = _compose(TOY, ["hparams_search=toy_optuna", "paths.output_dir=/tmp/x"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "minimize"
    assert "module.lr" in cfg.hydra.sweeper.params


def test_default_callbacks_and_loggers_instantiate(tmp_path):
    cfg = _compose(TOY, [f"paths.output_dir={tmp_path}", f"logger.mlflow.tracking_uri=sqlite:///{tmp_path}/m.db"])
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)
    names = {type(instantiate(c)).__name__ for c in cfg.callbacks.values()}
    # stdout is not a terminal under pytest: the progress bar is the one that writes a line per epoch
    assert names == {"ModelCheckpoint", "EarlyStopping", "EpochLines", "LearningRateMonitor", "FiniteLossGuard", "RngState",
                     "ResultsLog", "RunSummary"}


@pytest.mark.parametrize("package", PACKAGES)
def test_package_primary_configs_compose_with_every_trainer(package):
    for trainer in options("trainer"):
        cfg = _compose(SHARED / package, [f"trainer={trainer}", "paths.output_dir=/tmp/x"])
        assert cfg.package == package
