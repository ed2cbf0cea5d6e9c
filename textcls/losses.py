"""Losses for the long tail: BCE with ``pos_weight`` (given, or automatic from label frequencies), focal."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from common.errors import ConfigError

LOSSES = ("bce", "focal", "ce")


def auto_pos_weight(label_counts: Sequence[float], n: int, max_weight: float = 30.0) -> torch.Tensor:
    """``(n - pos) / pos`` per label, clipped to ``[1, max_weight]`` (labels without positives get 1)."""
    pos = torch.as_tensor(label_counts, dtype=torch.float32)
    w = torch.where(pos > 0, (n - pos) / pos.clamp_min(1.0), torch.ones_like(pos))
    return w.clamp(1.0, max_weight)


def resolve_pos_weight(spec, label_counts: Sequence[float], n: int, max_weight: float) -> torch.Tensor | None:
    """``None``/"none" -> no weighting; "auto" -> :func:`auto_pos_weight`; a number or list -> as given."""
    if spec is None or spec == "none":
        return None
    if spec == "auto":
        return auto_pos_weight(label_counts, n, max_weight)
    values = list(spec) if isinstance(spec, Sequence) and not isinstance(spec, str) else [spec]
    if not all(_is_number(v) and v > 0 for v in values):
        raise ConfigError(f"module.pos_weight: expected null, auto, a positive number or a list of them, got {spec!r}")
    if _is_number(spec):
        return torch.full((len(label_counts),), float(spec))
    if len(values) != len(label_counts):
        raise ConfigError(f"module.pos_weight: {len(values)} values for {len(label_counts)} labels")
    return torch.as_tensor([float(v) for v in values])


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def focal_loss(logits, target, gamma: float = 2.0, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017): BCE scaled by ``(1 - p_t)^gamma``, optionally pos-weighted."""
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    return ((1 - p_t) ** gamma * bce).mean()


def loss_fn(kind: str, logits, target, pos_weight=None, gamma: float = 2.0) -> torch.Tensor:
    if kind == "ce":
        return F.cross_entropy(logits, target.argmax(1))
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
    if kind == "focal":
        return focal_loss(logits, target, gamma, pos_weight)
    raise ConfigError(f"module.loss: expected one of {LOSSES}, got {kind!r}")
