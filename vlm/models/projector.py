"""Vision-to-LLM projectors (LLaVA's names)."""

from __future__ import annotations

from torch import nn

from common.errors import ConfigError


class VocabProjector(nn.Module):
    """``mlp2x_gelu`` into the LLM's vocabulary: image tokens become soft mixtures of the LLM's own (frozen)
    token embeddings, ``softmax(mlp(x)) @ E``. A frozen LLM reads them like words, which makes the coupling
    learnable in a few hundred CPU steps for the tiny embedded LLM (an option; real LLMs use mlp2x_gelu)."""

    uses_vocab = True

    def __init__(self, in_dim: int, hidden: int, vocab: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, vocab))

    def forward(self, x, embedding_weight):
        probs = self.mlp(x).softmax(-1)
        return probs @ embedding_weight.to(probs.dtype)


def build_projector(kind: str, in_dim: int, out_dim: int, vocab: int | None = None) -> nn.Module:
    if kind == "mlp2x_gelu_vocab":
        return VocabProjector(in_dim, out_dim * 2, vocab)
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    raise ConfigError(f"model.projector.type: unknown projector '{kind}' (linear, mlp2x_gelu, mlp2x_gelu_vocab)")
