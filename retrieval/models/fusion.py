"""Image + text fusion and the ArcFace head.

``MatchModel`` embeds an item with whichever towers it has. Fusion is the weighted concatenation
``[sqrt(w)·t, sqrt(1-w)·i]`` of the two normalised embeddings: its inner product is exactly the weighted
average of the text and image similarity matrices, so one FAISS index serves both views ("weighted concat"
and "averaged similarities" are the same ranking here; ``text_weight`` sets the mix).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import ConfigError
from retrieval.models.image import SCHEMES, ImageTower
from retrieval.models.text import OpenClipTextTower, TextTower
from retrieval.schemas import ImageConfig, OpenClipTextConfig


def _known_keys(node: dict, schema, key: str) -> dict:
    if not isinstance(node, dict):
        raise ConfigError(f"{key}: expected a mapping of tower options or null, got {node!r}")
    allowed = list(schema.__dataclass_fields__)
    for k in node:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}: unknown key (expected one of {', '.join(allowed)})")
    return node


class MatchModel(nn.Module):
    def __init__(self, text: dict | None = None, image: dict | None = None, text_weight: float = 0.5):
        super().__init__()
        open_clip_text = text == "open_clip" or (isinstance(text, dict) and text.get("arch") == "open_clip")
        if open_clip_text:
            text = _known_keys({"arch": "open_clip"} if text == "open_clip" else text, OpenClipTextConfig, "model.text")
            if image is None:
                raise ConfigError("model.text.arch=open_clip: the text tower of the image tower's open_clip model "
                                  "needs model.image (its arch names the model)")
        self.image = None
        if image is not None:
            if _known_keys(image, ImageConfig, "model.image").get("arch") in (None, "???"):
                raise ConfigError(f"model.image.arch: required for an image tower ({SCHEMES}; null: no image tower)")
            self.image = ImageTower(**image, keep_text=open_clip_text)
        if open_clip_text:
            clip, self.image.clip_text = self.image.clip_text, None
            self.text = OpenClipTextTower(clip, self.image.arch, self.image.width, text.get("proj_dim"))
        else:
            self.text = TextTower(**text) if text is not None else None
        if self.text is None and self.image is None:
            raise ConfigError("model: needs a text tower, an image tower or both")
        self.text_weight = text_weight if (self.text is not None and self.image is not None) else (1.0 if self.text is not None else 0.0)

    @property
    def dim(self) -> int:
        return (self.text.dim if self.text else 0) + (self.image.dim if self.image else 0)

    def forward(self, batch: dict) -> torch.Tensor:
        parts = []
        if self.text is not None:
            parts.append(math.sqrt(self.text_weight) * self.text(batch["title"]))
        if self.image is not None:
            parts.append(math.sqrt(1 - self.text_weight) * self.image(batch["image"]))
        return torch.cat(parts, dim=-1)


class ArcFace(nn.Module):
    """Additive angular margin softmax on ``label_group`` (``subcenters`` > 1: sub-center ArcFace)."""

    def __init__(self, dim: int, num_classes: int, margin: float = 0.3, scale: float = 30.0, subcenters: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes * subcenters, dim) * 0.01)
        self.num_classes, self.k, self.m, self.s = num_classes, subcenters, margin, scale

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(emb, dim=-1) @ F.normalize(self.weight, dim=-1).T
        cos = cos.view(-1, self.num_classes, self.k).amax(-1).clamp(-1 + 1e-6, 1 - 1e-6)
        theta = torch.acos(cos)
        target = F.one_hot(labels, self.num_classes).bool()
        logits = torch.where(target, torch.cos(theta + self.m), cos) * self.s
        return F.cross_entropy(logits, labels)
