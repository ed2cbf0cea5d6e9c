"""Fixtures of the vlm tests: a tiny composed config (tiny ViT/LM, a few dozen synthetic images)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

import common.config  # noqa: F401  (resolvers)
from common.compose import compose_run, conf_dir

TINY = [
    "data.synthetic.brands=3",
    "data.synthetic.train_logo_per_brand=24",
    "data.synthetic.train_none=24",
    "data.synthetic.train_none_brand_per_brand=6",
    "data.synthetic.eval_logo_per_brand=6",
    "data.synthetic.eval_none=6",
    "data.synthetic.eval_none_brand_per_brand=2",
    "data.train_eval_size=24",
    "data.batch_size=16",
    "model.vision.hidden_size=32",
    "model.vision.num_layers=1",
    "model.vision.num_heads=2",
    "model.vision.intermediate_size=64",
    "model.llm.hidden_size=32",
    "model.llm.intermediate_size=64",
    "model.llm.num_layers=1",
    "model.llm.num_heads=2",
    "model.llm.num_kv_heads=1",
    "model.llm.pretrain_steps=20",
    "model.vision.pretrain_steps=20",
    "trainer.max_epochs=1",
]


@pytest.fixture(scope="session")
def vlm_cache(tmp_path_factory) -> Path:
    """One cache for the session: the tiny synthetic set and tiny LM are built once."""
    return tmp_path_factory.mktemp("vlm_cache")


@pytest.fixture
def vlm_cfg(tmp_path, vlm_cache, mlflow_uri):
    """``vlm_cfg(*overrides, tiny=True)``: conf/vlm/train.yaml composed like the CLI, writing under tmp_path."""
    counter = itertools.count()

    def make(*overrides: str, tiny: bool = True):
        base = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={vlm_cache}"]
        if "logger=none" not in overrides:
            base += [f"logger.mlflow.tracking_uri={mlflow_uri}", f"logger.mlflow.artifact_location={tmp_path / 'art'}"]
        cfg = compose_run(conf_dir("vlm"), [*base, *(TINY if tiny else []), *overrides],
                          lambda c, n=next(counter): Path(c.paths.log_dir) / c.task_name / "runs" / f"{n:02d}")
        return cfg

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture
def built(vlm_cfg):
    """``built(*overrides)`` -> (cfg, module, datamodule) from the tiny config (validated like run.train)."""
    from common.config import validate
    from vlm.build import build
    from vlm.schemas import SCHEMAS

    def make(*overrides: str):
        cfg = validate(vlm_cfg("logger=none", *overrides), SCHEMAS)
        module, dm = build(cfg)
        return cfg, module, dm

    return make


def synth_dir(cfg_or_run) -> Path:
    """The synthetic set a run used (a composed config, or a run dir with ``.hydra/config.yaml``): the session cache
    holds one set per data config, so the first ``synth-*`` folder found may be another test's."""
    from omegaconf import OmegaConf

    from vlm import synth

    cfg = cfg_or_run if not isinstance(cfg_or_run, str | Path) else OmegaConf.load(Path(cfg_or_run) / ".hydra" / "config.yaml")
    sc = synth.SynthConfig(**OmegaConf.to_container(cfg.data.synthetic, resolve=True))
    return synth.ensure(sc, cfg.paths.cache_dir)
