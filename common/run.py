"""The one function every ``train.py`` calls.

``train(cfg, build)`` validates the config, seeds, builds the LightningModule and DataModule (``build`` or
``cfg.module`` / ``cfg.data`` via ``hydra.utils.instantiate``), the callbacks, loggers and trainer, records
the run in MLflow, fits (resuming from ``ckpt_path``; ``last`` means the newest ``last.ckpt`` of an earlier
run with the same overrides), tests on the best checkpoint, writes ``metrics.json`` atomically and returns
``cfg.optimized_metric`` for Optuna. The MLflow run ends FINISHED or FAILED whatever happens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from common import checkpoints, io, tracking
from common.callbacks import ValidateFinalEpoch
from common.config import validate
from common.errors import ConfigError
from common.signals import stop_signal

log = logging.getLogger(__name__)

Build = Callable[[DictConfig], tuple[Any, Any]]


def _hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def _comparable(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if not o.lstrip("+~").startswith(("ckpt_path", "hydra.")))


def resolve_ckpt_path(cfg: DictConfig) -> tuple[str | None, str | None]:
    """``(checkpoint path, MLflow run id to continue)`` for ``cfg.ckpt_path``."""
    value = cfg.get("ckpt_path")
    if not value:
        return None, None
    if str(value) != "last":
        path = Path(str(value))
        if not path.is_file():
            raise ConfigError(f"ckpt_path: no checkpoint file at {path}")
        return str(path), None
    root = Path(cfg.paths.log_dir) / cfg.task_name
    want = _comparable(_hydra_overrides())
    candidates = []
    for ckpt in root.glob("**/checkpoints/last.ckpt"):
        run_dir = ckpt.parent.parent
        saved = run_dir / ".hydra" / "overrides.yaml"
        if saved.exists() and _comparable(list(OmegaConf.load(saved))) == want:
            candidates.append(ckpt)
    if not candidates:
        raise ConfigError(
            f"ckpt_path=last: no earlier {cfg.task_name} run with overrides {want} left a last.ckpt under {root}"
        )
    ckpt = max(candidates, key=lambda p: p.stat().st_mtime)
    run_id_file = ckpt.parent.parent / tracking.RUN_ID_FILE
    log.info("resuming from %s", ckpt)
    return str(ckpt), (run_id_file.read_text().strip() if run_id_file.exists() else None)


def instantiate_callbacks(cfg: DictConfig | None) -> list:
    from hydra.utils import instantiate

    return [instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def instantiate_loggers(cfg: DictConfig, resume_run_id: str | None) -> list:
    from hydra.utils import instantiate
    from lightning.pytorch.loggers import MLFlowLogger

    loggers = []
    overrides = _hydra_overrides()
    for node in (cfg.get("logger") or {}).values():
        if node is None or "_target_" not in node:
            continue
        target = str(node._target_)
        if target.endswith("MLFlowLogger"):
            tags = {
                "task": cfg.task_name,
                "overrides": json.dumps(overrides),
                "report_metrics": json.dumps(list(cfg.get("report_metrics") or [])),
                "report_labels": json.dumps(dict(cfg.get("report_labels") or {}), ensure_ascii=False),
                **tracking.git_info(cfg.paths.root_dir),
                **{str(k): str(v) for k, v in (node.get("tags") or {}).items()},
            }
            parent = _parent_run_id()
            if parent:
                tags["mlflow.parentRunId"] = parent
            # the store and the experiment exist before the logger looks (jobs racing on a new store)
            tracking.experiment_id(str(node.tracking_uri), str(node.experiment_name), node.get("artifact_location"))
            name, note = tracking.given_run(cfg)
            if note:
                tags[tracking.NOTE_TAG] = note
            if name and not resume_run_id:
                name = tracking.unique_run_name(node.tracking_uri, node.experiment_name, name, node.get("artifact_location"))
            lg = instantiate(
                node, run_name=name or tracking.run_name(cfg.task_name, overrides), tags=tags, run_id=resume_run_id
            )
            assert isinstance(lg, MLFlowLogger)
        else:
            lg = instantiate(node)
        loggers.append(lg)
    return loggers


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _parent_run_id() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    if not _is_multirun():
        return None
    f = Path(HydraConfig.get().sweep.dir) / tracking.PARENT_RUN_FILE
    return f.read_text().strip() if f.exists() else None


def _record_run(loggers: list, cfg: DictConfig, output_dir: Path) -> None:
    from hydra.core.hydra_config import HydraConfig

    for lg in loggers:
        if run := tracking.mlflow_run(lg):
            mlf_client, run_id = run
            io.write_text(output_dir / tracking.RUN_ID_FILE, run_id)
            tracking.log_config(mlf_client, run_id, cfg)
            tags = {"output_dir": str(output_dir)}
            if _is_multirun():
                tags["job_num"] = str(HydraConfig.get().job.num)
            for k, v in tags.items():
                mlf_client.set_tag(run_id, k, v)


def drop_output_capturing_hooks(module) -> None:
    """``ddp_spawn`` pickles the module to its workers, and transformers' output-capturing forward hooks (local
    closures it installs on a model's first forward) cannot be pickled: drop them and their "installed" mark,
    so the next forward, in whichever process, installs them again (see :class:`SpawnedTransformers`)."""
    for m in module.modules():
        for hid, fn in list(m._forward_hooks.items()):
            if "output_capturing_hook" in getattr(fn, "__qualname__", ""):
                for hooks in (m._forward_hooks, m._forward_hooks_with_kwargs, m._forward_hooks_always_called):
                    hooks.pop(hid, None)
        if getattr(m, "_output_capturing_hooks_installed", False):
            m._output_capturing_hooks_installed = False


class SpawnedTransformers(Callback):
    """In a spawned worker no transformers model was constructed, so transformers' registry of what each model
    class can record (filled by ``PreTrainedModel.__init__``) is empty and ``output_hidden_states`` comes back
    None; register the unpickled models' classes again before the first forward."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        try:
            from transformers import PreTrainedModel
            from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
        except ImportError:  # another transformers version: nothing to repair
            return
        for m in pl_module.modules():
            if isinstance(m, PreTrainedModel) and getattr(m, "_can_record_outputs", None):
                _CAN_RECORD_REGISTRY[m] = m._can_record_outputs


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def train(cfg: DictConfig, build: Build | None = None, schemas: dict[str, type] | None = None) -> float | None:
    """Fit and test one configured job; return ``cfg.optimized_metric`` (None when unset)."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import LearningRateMonitor

    validate(cfg, schemas)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, resume_run_id = resolve_ckpt_path(cfg)

    module, datamodule = build(cfg) if build else (instantiate(cfg.module), instantiate(cfg.data))
    if ckpt_path:
        checkpoints.check_resumable(ckpt_path, module, "ckpt_path")
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg, resume_run_id)
    if not loggers:  # Lightning refuses an LR monitor without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # ValidateFinalEpoch: the last epoch validates even when check_val_every_n_epoch does not divide max_epochs
    callbacks = [*callbacks, SpawnedTransformers(), ValidateFinalEpoch()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if trainer.world_size > 1:
        drop_output_capturing_hooks(module)
    if trainer.is_global_zero:
        _record_run(loggers, cfg, output_dir)

    status, metrics = "FAILED", {}
    try:
        if cfg.get("train", True):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            metrics.update(_scalars(trainer.callback_metrics))
        if cfg.get("test", True):
            # train=false tests the given checkpoint (ckpt_path), or the weights as built when there is none
            best = getattr(trainer.checkpoint_callback, "best_model_path", "") if cfg.get("train", True) else ckpt_path
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            metrics.update(_scalars(trainer.callback_metrics))
        name = cfg.get("optimized_metric") if cfg.get("train", True) else None  # only a fit has one to return
        if name and name not in metrics:
            raise ConfigError(f"optimized_metric: '{name}' was not logged; logged: {sorted(metrics)}")
        if trainer.is_global_zero:
            fingerprint = getattr(datamodule, "fingerprint", None)
            if fingerprint:
                tracking.set_tags(loggers, {"data_fingerprint": fingerprint})
            io.write_json(output_dir / "metrics.json", metrics)
            tracking.log_artifact(loggers, output_dir / "metrics.json")
            on_end = getattr(module, "on_run_end", None)
            if callable(on_end):
                on_end(trainer=trainer, datamodule=datamodule, output_dir=output_dir, loggers=loggers)
        status = "FINISHED"
    except BaseException as e:
        if stop_signal(e):  # SIGTERM / Ctrl-C: KILLED, not FAILED; the last.ckpt saved so far resumes it
            status = "KILLED"
        raise
    finally:
        tracking.end_runs(loggers, status)

    return metrics[name] if name else None
