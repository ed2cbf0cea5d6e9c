"""MLflow bookkeeping around Lightning's own ``MLFlowLogger``.

The store is a local sqlite file by default (``sqlite:///<project>/mlruns.db``; mlflow 3 refuses a bare
file store) and any ``http://`` tracking server when ``MLFLOW_TRACKING_URI`` or
``logger.mlflow.tracking_uri`` says so. Each run records the resolved config (artifact + flattened params),
the git commit and dirty flag, the data fingerprint, and the overrides that made it. A Hydra multirun gets
one parent run (created by :class:`SweepCallback` before the jobs start) and one child run per job.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

PARENT_RUN_FILE = "mlflow_parent_run_id"
RUN_ID_FILE = "mlflow_run_id"
FAILURES_DIR = "failed_jobs"
MAX_PARAM_VALUE = 6000  # mlflow 3's limit on a param value
MAX_KEY = 250
MAX_RUN_NAME = 250


def flatten(cfg: Mapping | DictConfig, prefix: str = "") -> dict[str, str]:
    """``{"model.lora.r": "16", ...}``, values cut to MLflow's length limit."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else str(value)
            if len(text) > MAX_PARAM_VALUE:
                text = text[: MAX_PARAM_VALUE - 3] + "..."
            out[name[:MAX_KEY]] = text
    return out


def git_info(root: str | os.PathLike) -> dict[str, str]:
    """Commit and dirty flag of the checkout at ``root``; empty when it is not a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git_commit": commit, "git_dirty": str(dirty).lower()}


# Overrides that say where things go, not what was run: left out of run names and reports.
# run.name / run.note are the run's name and description themselves.
_PLUMBING = ("hydra.", "hydra/", "paths.", "ckpt_path", "logger.mlflow.tracking_uri", "logger.mlflow.artifact_location",
             "run.name", "run.note")


def shown_overrides(overrides: Iterable[str]) -> list[str]:
    return [o for o in overrides if not o.lstrip("+~").startswith(_PLUMBING)]


def run_name(task_name: str, overrides: Iterable[str]) -> str:
    return " ".join([task_name, *shown_overrides(overrides)])[:MAX_RUN_NAME]


_READY_STORES: set[str] = set()


def ensure_store(tracking_uri: str) -> None:
    """Create and migrate a local sqlite store once, under a file lock beside it.

    mlflow creates a new sqlite store's tables on first use, and two processes that do it at once (joblib
    jobs, two shells) corrupt the migration: one dies in alembic (``expected to match one row ...
    alembic_version; 0 found``). The first process here migrates; the others wait, then find it done.
    """
    if tracking_uri in _READY_STORES or not tracking_uri.startswith("sqlite:///"):
        return
    from filelock import FileLock
    from mlflow import MlflowClient

    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    # mlflow announces a new store's tables at INFO on stderr ("Creating initial MLflow database tables..."),
    # ahead of whatever a command prints: quiet while it creates them
    quiet = [logging.getLogger(n) for n in ("mlflow.store.db.utils", "alembic")]
    levels = [lg.level for lg in quiet]
    with FileLock(str(db) + ".lock", timeout=600):
        try:
            for lg in quiet:
                lg.setLevel(logging.WARNING)
            MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)  # creates / migrates the tables
        finally:
            for lg, level in zip(quiet, levels, strict=True):
                lg.setLevel(level)
    _READY_STORES.add(tracking_uri)


NOTE_TAG = "mlflow.note.content"  # the run's description on its MLflow page


def given_run(cfg: DictConfig) -> tuple[str | None, str | None]:
    """``(run.name, run.note)`` as the user gave them (None when unset or when the config has no run node)."""
    node = cfg.get("run") or {}
    name, note = node.get("name"), node.get("note")
    return (str(name) if name not in (None, "") else None), (str(note) if note not in (None, "") else None)


def unique_run_name(tracking_uri: str, experiment: str, name: str, artifact_location: str | None = None) -> str:
    """``name``, or ``name-2``, ``name-3`` ... when runs of ``experiment`` already carry it: a repeated name
    never makes two runs a person cannot tell apart. (Two jobs racing on one name may still both get it.)"""
    c = client(tracking_uri)
    exp_id = experiment_id(tracking_uri, experiment, artifact_location)
    prefix = name.split("'")[0]  # the filter only narrows the search: any superset of the names will do
    taken = {r.info.run_name for r in c.search_runs([exp_id], f"attributes.run_name LIKE '{prefix}%'",
                                                     max_results=5000)}
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def artifact_root() -> str:
    """Where every experiment's artifacts go: ``$MLFLOW_ARTIFACT_ROOT``, else ``<project>/mlartifacts``
    (the same default as ``logger.mlflow.artifact_location``)."""
    from common.config import project_root

    return os.environ.get("MLFLOW_ARTIFACT_ROOT") or str(project_root() / "mlartifacts")


def differing_overrides(runs: Sequence[Iterable[str]]) -> list[str]:
    """One label per run from the overrides (``key=value``, plumbing left out) whose value is not the same in
    every run: the children of ``model.lora.r=16,32`` read ``model.lora.r=16`` and ``model.lora.r=32``, not
    their shared ``+exp=lora ...`` prefix. A run none of whose overrides differ gets ``""``."""
    parsed = []
    for overrides in runs:
        items = [o.partition("=") for o in shown_overrides(overrides)]
        parsed.append({k.lstrip("+~"): v for k, _, v in items})
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    return [" ".join(f"{k}={p[k]}" for k in varying if k in p) for p in parsed]


def client(tracking_uri: str):
    from mlflow import MlflowClient

    ensure_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def experiment_id(tracking_uri: str, name: str, artifact_location: str | None = None) -> str:
    """Id of experiment ``name``, created on first use with its artifacts in ``artifact_location`` (default:
    ``<artifact_root()>/<name>``; MLflow's own default is ``./mlruns`` of whatever directory a command runs in).
    Safe when several jobs race to create it."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_location or f"{artifact_root()}/{name}")
    except MlflowException:
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def log_config(mlf_client, run_id: str, cfg: DictConfig) -> None:
    """Resolved config as ``config.yaml`` artifact plus flattened params (100 per batch, MLflow's limit).

    A resumed run already has params, and MLflow never changes a logged param: the resumed config goes
    to ``config.resumed.yaml`` and only params the run lacks are added.
    """
    from mlflow.entities import Param

    existing = mlf_client.get_run(run_id).data.params
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("config.resumed.yaml" if existing else "config.yaml")
        path.write_text(OmegaConf.to_yaml(cfg, resolve=True), encoding="utf-8")
        mlf_client.log_artifact(run_id, str(path))
    params = [Param(k, v) for k, v in flatten(cfg).items() if k not in existing]
    for i in range(0, len(params), 100):
        mlf_client.log_batch(run_id, params=params[i : i + 100])


def mlflow_run(logger) -> tuple[Any, str] | None:
    """``(MlflowClient, run_id)`` of a Lightning ``MLFlowLogger``, or None for any other logger."""
    from lightning.pytorch.loggers import MLFlowLogger

    if isinstance(logger, MLFlowLogger):
        return logger.experiment, logger.run_id
    return None


def log_artifact(loggers, path: str | os.PathLike, artifact_path: str | None = None) -> None:
    """Upload a file (or folder) to every MLflow run among ``loggers``; a no-op without one."""
    for lg in loggers or []:
        if run := mlflow_run(lg):
            mlf_client, run_id = run
            if Path(path).is_dir():
                mlf_client.log_artifacts(run_id, str(path), artifact_path)
            else:
                mlf_client.log_artifact(run_id, str(path), artifact_path)


def save_figure(loggers, figure, path: str | os.PathLike, artifact_path: str, dpi: int = 110) -> Path:
    """Render ``figure`` once to ``path`` (atomically), upload that PNG to every MLflow run under
    ``artifact_path``, close the figure. (``log_figure`` after ``savefig`` rendered every plot twice.)"""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=dpi)
    tmp.replace(path)
    log_artifact(loggers, path, artifact_path)
    plt.close(figure)
    return path


def log_figure(loggers, figure, name: str) -> None:
    """Log a matplotlib figure as a PNG artifact (``name`` like ``plots/pr_curve.png``)."""
    for lg in loggers or []:
        if run := mlflow_run(lg):
            mlf_client, run_id = run
            mlf_client.log_figure(run_id, figure, name)


def set_tags(loggers, tags: Mapping[str, Any]) -> None:
    for lg in loggers or []:
        if run := mlflow_run(lg):
            mlf_client, run_id = run
            for k, v in tags.items():
                mlf_client.set_tag(run_id, k, str(v))


def log_metrics(loggers, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log plain float metrics to every MLflow run among ``loggers`` (one batch each)."""
    import time

    from mlflow.entities import Metric

    if not metrics:
        return
    now = int(time.time() * 1000)
    for lg in loggers or []:
        if run := mlflow_run(lg):
            mlf_client, run_id = run
            mlf_client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def end_runs(loggers, status: str) -> None:
    """Mark every MLflow run among ``loggers`` FINISHED, FAILED or KILLED (Lightning marks fit's end only)."""
    for lg in loggers or []:
        if run := mlflow_run(lg):
            mlf_client, run_id = run
            try:
                mlf_client.set_terminated(run_id, status)
            except Exception as e:  # never hide the job's own error behind a bookkeeping one
                log.warning("could not end MLflow run %s: %s", run_id, e)


def _mlflow_cfg(config: DictConfig) -> DictConfig | None:
    lg = config.get("logger") or {}
    return lg.get("mlflow") if isinstance(lg, Mapping | DictConfig) else None


def end_sweep_parent(sweep_dir: Path, config: DictConfig, status: str, tags: dict[str, str] | None = None) -> None:
    """End the sweep's parent MLflow run (its id is in ``sweep_dir``) with ``status``; nothing without one."""
    parent_file = sweep_dir / PARENT_RUN_FILE
    mcfg = _mlflow_cfg(config)
    if mcfg is None or not parent_file.exists():
        return
    c = client(mcfg.tracking_uri)
    run_id = parent_file.read_text().strip()
    for k, v in (tags or {}).items():
        c.set_tag(run_id, k, v)
    c.set_terminated(run_id, status)


class SweepCallback(Callback):
    """Hydra callback: one MLflow parent run per multirun, and a sweep that survives failing jobs.

    ``on_multirun_start`` creates the parent run and leaves its id in the sweep dir, where each job (in this
    process or a joblib/SLURM worker) finds it. Jobs that fail are recorded under ``failed_jobs/`` by the
    job wrapper instead of killing the sweep; ``on_multirun_end`` closes the parent as FAILED when any job
    failed and then raises, so the command still exits non-zero.
    """

    def on_multirun_start(self, config: DictConfig, **_: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        mcfg = _mlflow_cfg(config)
        if mcfg is None:
            return
        from common.config import register_resolvers

        register_resolvers()
        uri = mcfg.tracking_uri
        exp_id = experiment_id(uri, mcfg.experiment_name, mcfg.get("artifact_location"))
        overrides = list(config.hydra.overrides.task)
        tags = {
            "sweep_dir": str(sweep_dir),
            "task": config.get("task_name", ""),
            "overrides": json.dumps(overrides),
            "is_sweep_parent": "true",
            **git_info(config.paths.root_dir),
        }
        try:
            _, note = given_run(config)
        except Exception:  # a note interpolating a swept key has no value before the jobs start
            note = None
        if note:
            tags[NOTE_TAG] = note
        run = client(uri).create_run(
            exp_id, run_name=run_name(f"{config.get('task_name', '')} [sweep]", overrides), tags=tags
        )
        (sweep_dir / PARENT_RUN_FILE).write_text(run.info.run_id)

    def on_multirun_end(self, config: DictConfig, **_: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failures = sorted((sweep_dir / FAILURES_DIR).glob("*.txt")) if (sweep_dir / FAILURES_DIR).exists() else []
        end_sweep_parent(sweep_dir, config, "FAILED" if failures else "FINISHED", {"failed_jobs": str(len(failures))})
        if failures:
            lines = [f.read_text(encoding="utf-8").strip().splitlines()[0] for f in failures]
            print(
                f"error: {len(failures)} sweep job(s) failed (the others finished; tracebacks in "
                f"{sweep_dir / FAILURES_DIR}):\n" + "\n".join(lines),
                file=sys.stderr,
            )
            # Hydra turns a callback's exception into a warning; SystemExit is the way to exit non-zero.
            raise SystemExit(1)
