"""Suite-wide settings: offline hub, one MLflow sqlite store per session, the toy config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on two cores: one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"


# Files that share no trained fixture with the rest of their package (only a data cache): each is a group of its
# own, so the other worker can take it. vlm's real-tower CLI runs are five minutes on one worker otherwise.
OWN_GROUP = {"vlm/test_towers.py"}


def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n 2 --dist loadgroup`` a package's tests share one worker (and so its session-scoped
    trained fixtures, built once); the scale-out files and :data:`OWN_GROUP`, which share nothing but a cache,
    spread out."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        own = parts[0] == "scale" or "/".join(parts[:2]) in OWN_GROUP
        item.add_marker(pytest.mark.xdist_group("/".join(parts[:2]) if own else parts[0]))


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """The tests' MLflow store. ``TEST_MLFLOW_STORE=/abs/path.db`` keeps it for ``make ui STORE=...``."""
    kept = os.environ.get("TEST_MLFLOW_STORE")
    path = Path(kept) if kept else tmp_path_factory.mktemp("mlflow") / "mlruns.db"
    return f"sqlite:///{path.resolve()}"


@pytest.fixture(scope="session", autouse=True)
def _artifacts_under_tmp(tmp_path_factory):
    """Whatever a test runs, MLflow artifacts of an experiment it did not point elsewhere land in a temp dir,
    never in the clone (``mlartifacts/``, or MLflow's ``./mlruns`` of the cwd)."""
    if "MLFLOW_ARTIFACT_ROOT" in os.environ:
        yield
        return
    os.environ["MLFLOW_ARTIFACT_ROOT"] = str(tmp_path_factory.mktemp("mlartifacts"))
    yield
    os.environ.pop("MLFLOW_ARTIFACT_ROOT", None)


def run_cli(*args: str, env: dict | None = None, timeout: int = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``python -m ...`` the way a user does (fresh interpreter, repo root as cwd)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
