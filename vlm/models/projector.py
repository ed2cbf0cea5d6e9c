"""Vision-to-LLM projectors (LLaVA's names)."""

from __future__ import annotations

from torch import nn

from common.errors import ConfigError


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    raise ConfigError(f"model.projector.type: unknown projector '{kind}' (linear, mlp2x_gelu)")
