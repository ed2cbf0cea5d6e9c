"""Image tower through open_clip: ``create_model(arch, pretrained=tag | /local/checkpoint)`` and its visual
trunk, L2-normalised. Two tiny architectures are registered for the embedded default (trained from
scratch); any open_clip name works with a ``pretrained`` tag or local file (e.g. ``ViT-B-16-SigLIP``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import ConfigError

TINY_CONFIGS = {
    "retrieval-tiny-vit": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 96, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    },
    "retrieval-tiny-rn": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    },
}


def register_tiny() -> None:
    import open_clip.factory as factory

    for name, cfg in TINY_CONFIGS.items():
        factory._MODEL_CONFIGS.setdefault(name, cfg)


class ImageTower(nn.Module):
    def __init__(self, arch: str = "retrieval-tiny-vit", pretrained: str | None = None, image_size: int | None = None,
                 proj_dim: int | None = None):
        super().__init__()
        import open_clip

        register_tiny()
        if arch not in open_clip.list_models():
            raise ConfigError(f"model.image.arch: unknown open_clip architecture {arch!r}")
        try:
            clip = open_clip.create_model(arch, pretrained=pretrained or None, force_image_size=image_size)
        except (RuntimeError, OSError) as e:
            raise ConfigError(f"model.image.pretrained: cannot load {pretrained!r} for {arch} ({e})") from None
        self.visual = clip.visual
        cfg = getattr(self.visual, "preprocess_cfg", {}) or {}
        self.image_size = image_size or self.visual.image_size
        if isinstance(self.image_size, tuple | list):
            self.image_size = self.image_size[0]
        self.mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
        width = getattr(self.visual, "output_dim", None) or clip.text_projection.shape[-1]
        self.proj = nn.Linear(width, proj_dim, bias=False) if proj_dim else nn.Identity()
        self.dim = proj_dim or width
        del clip

    def transforms(self) -> tuple:
        """``(train, eval)`` torchvision transforms matching the tower's size and normalisation."""
        import open_clip

        aug = {"scale": (0.7, 1.0)}
        return (open_clip.image_transform(self.image_size, True, self.mean, self.std, aug_cfg=aug),
                open_clip.image_transform(self.image_size, False, self.mean, self.std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.visual(images)), dim=-1)
