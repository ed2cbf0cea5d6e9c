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

# The order the groups are dealt to the workers, longest first, so that nothing long is left to run alone at
# the end (the wall time is the busier worker's). Worker seconds in `make test` on 2026-12-01, counting only
# tests over 4 s each: DDP file 240, vlm real towers 160, reliability 136, common 117, textcls 71, vlm 65 (and
# the most tests, on session-built models), retrieval 62, sweeps 54, report sweep 32; the groups not named
# (conf, gather: seconds) come last.
# NB: under pytest 9 with xdist 3.8 `--dist loadgroup` does not hold its groups: xdist renames `item._nodeid` to
# `<id>@<group>`, but pytest 9 builds `nodeid` from `item._id`, so every test became its own unit. A scheduler of our
# own (xdist's `pytest_xdist_make_scheduler` hook, one group a work unit) made the groups hold again, but measured
# slower in a fresh clone (pytest 684 s against loadfile's 630 s the same evening: whole packages balance worse than
# files). `make test` therefore deals whole files (`--dist loadfile`), in this order: the long files first, the
# short ones last. The xdist_group marks stay for `--dist loadgroup` once xdist and pytest agree again.
FIRST = ("scale/test_ddp_cpu.py", "vlm/test_towers.py", "vlm", "reliability", "common", "textcls", "retrieval",
         "scale/test_sweeps.py", "scale/test_report_sweep.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # xdist: deal the groups in the order collected (below)
        config.option.loadscopereorder = False


def _group(item) -> str:
    parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
    own = parts[0] == "scale" or "/".join(parts[:2]) in OWN_GROUP
    return "/".join(parts[:2]) if own else parts[0]


def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n 2 --dist loadgroup`` (see the NB above; ``make test`` uses loadfile) a package's tests are
    meant to share one worker (and so its session-scoped trained fixtures, built once); the scale-out files and
    :data:`OWN_GROUP`, which share nothing but a cache, spread out. Groups are ordered :data:`FIRST`, then by number
    of tests; each keeps its own order."""
    groups = {id(item): _group(item) for item in items}
    count: dict[str, int] = {}
    for g in groups.values():
        count[g] = count.get(g, 0) + 1
    seen = {g: k for k, g in enumerate(dict.fromkeys(groups.values()))}

    def rank(g: str) -> tuple[int, int, int]:
        return (FIRST.index(g) if g in FIRST else len(FIRST), -count[g], seen[g])

    items.sort(key=lambda item: rank(groups[id(item)]))
    for item in items:
        item.add_marker(pytest.mark.xdist_group(groups[id(item)]))


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
