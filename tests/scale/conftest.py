"""Shared by the scale-out tests: one cache of embedded data/models per session, the package configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

import common.config  # noqa: F401  (resolvers)
from tests.conftest import run_cli


@pytest.fixture(scope="session")
def scale_cache(tmp_path_factory) -> Path:
    """Synthetic sets and pre-trained tiny models, built once for all scale tests."""
    return tmp_path_factory.mktemp("scale_cache")


def package_cfg(package: str, *overrides: str):
    """``conf/<package>/train.yaml`` composed as the CLI composes it (no run is started)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(f"conf.{package}", version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _train_args(run_dir: Path, overrides: tuple[str, ...], cache: Path) -> list[str]:
    return [*overrides, f"hydra.run.dir={run_dir}", f"paths.log_dir={run_dir.parent / 'logs'}",
            f"paths.cache_dir={cache}", "callbacks.progress_bar=null"]


def train_cli(package: str, run_dir: Path, *overrides: str, cache: Path, env: dict | None = None) -> dict[str, float]:
    """``python -m <package>.train`` in a fresh interpreter; the metrics.json it wrote."""
    res = run_cli("-m", f"{package}.train", *_train_args(run_dir, overrides, cache), env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def train_here(package: str, run_dir: Path, *overrides: str, cache: Path) -> dict[str, float]:
    """:func:`train_cli` in this process (the same command line, ~7 s of imports fewer); the metrics.json."""
    from tests.reliability.harness import call

    ended = call(f"{package}.train", *_train_args(run_dir, overrides, cache))
    assert ended.code == 0, ended.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())
