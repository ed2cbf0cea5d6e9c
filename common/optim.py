"""Optimiser and learning-rate schedule from the shared ``optim/`` and ``scheduler/`` config groups.

``optim`` is a partial optimiser (``torch.optim.AdamW`` by default) and ``scheduler`` a partial of
:func:`schedule`; :func:`configure` completes both for a LightningModule's ``configure_optimizers``, the one
place parameters, steps and schedule meet (as in lightning-hydra-template).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from common.errors import ConfigError


def schedule(optimizer: torch.optim.Optimizer, num_training_steps: int, name: str = "constant", warmup_steps: int = 0,
             warmup_ratio: float = 0.0, min_lr_rate: float | None = None):
    """transformers' ``get_scheduler(name)``, stepping per optimiser step.

    The warm-up is ``warmup_steps`` or ``warmup_ratio`` of all steps (the larger), capped at half the run;
    ``constant`` with a warm-up is transformers' ``constant_with_warmup``; ``min_lr_rate`` makes ``cosine``
    end at that fraction of the peak (``cosine_with_min_lr``).
    """
    from transformers import SchedulerType, get_scheduler

    total = max(1, int(num_training_steps))
    warm = min(max(int(warmup_steps), round(warmup_ratio * total)), total // 2)
    if name == "constant" and warm:
        name = "constant_with_warmup"
    kwargs: dict[str, Any] = {}
    if min_lr_rate is not None:
        if name != "cosine":
            raise ConfigError(f"scheduler.min_lr_rate: only for name=cosine, got name={name!r}")
        name, kwargs = "cosine_with_min_lr", {"min_lr_rate": float(min_lr_rate)}
    names = [t.value for t in SchedulerType]
    if name not in names:
        raise ConfigError(f"scheduler.name: expected one of {names}, got {name!r}")
    return get_scheduler(name, optimizer, num_warmup_steps=warm, num_training_steps=total, scheduler_specific_kwargs=kwargs)


def configure(params: Iterable[torch.nn.Parameter] | Iterable[Mapping], optim: Mapping | Any,
              scheduler: Mapping | Any | None, num_training_steps: int) -> dict:
    """``{"optimizer", "lr_scheduler"}`` for ``configure_optimizers`` from the two config nodes (or partials)."""
    from hydra.utils import instantiate

    make_opt = instantiate(optim) if isinstance(optim, Mapping) else optim  # a config node (dict / DictConfig) or a partial
    opt = make_opt([p for p in params if not isinstance(p, torch.nn.Parameter) or p.requires_grad])
    if scheduler is None:
        return {"optimizer": opt}
    make_sched = instantiate(scheduler) if isinstance(scheduler, Mapping) else scheduler
    return {"optimizer": opt, "lr_scheduler": {"scheduler": make_sched(opt, num_training_steps), "interval": "step"}}


def nodes(*, lr: float, weight_decay: float, schedule_name: str, warmup_steps: int) -> tuple[dict, dict]:
    """``(optim, scheduler)`` config nodes for code that builds a module without Hydra (benches, tests)."""
    return ({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": lr, "weight_decay": weight_decay},
            {"_target_": "common.optim.schedule", "_partial_": True, "name": schedule_name, "warmup_steps": warmup_steps})


def from_hparams(module) -> dict:
    """``configure_optimizers`` of a LightningModule that saved ``optim`` and ``scheduler`` nodes as hyper-parameters."""
    hp = module.hparams
    if hp.get("optim") is None:
        raise ConfigError(f"optim: this {type(module).__name__} was built without an optimiser config (give optim=...)")
    return configure(module.parameters(), hp.optim, hp.get("scheduler"), module.trainer.estimated_stepping_batches)
