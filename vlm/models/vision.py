"""Vision tower: a tiny ViT from a config by default, or a real HF vision checkpoint by path.

``name_or_path`` loads SigLIP / CLIP (their ``vision_model``) or any ``AutoModel`` vision encoder; InternViT
and other custom code need ``trust_remote_code=true``, an explicit opt-in. Features come from
``feature_layer`` of the hidden states (LLaVA uses -2), the CLS token dropped when the tower has one,
and an optional pixel shuffle (InternVL's) that trades ``f*f`` neighbouring patches for ``f*f`` times the width.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from common.cache import build_once, content_hash
from common.errors import ConfigError


def pixel_shuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``[B, N, C] -> [B, N / f^2, C * f^2]`` over the square patch grid."""
    if factor == 1:
        return x
    b, n, c = x.shape
    side = int(round(n**0.5))
    if side * side != n or side % factor:
        raise ConfigError(f"model.vision.pixel_shuffle: {n} patches do not form a square grid divisible by {factor}")
    x = x.view(b, side // factor, factor, side // factor, factor, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (side // factor) ** 2, c * factor * factor)


class VisionTower(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.feature_layer = int(cfg.feature_layer)
        self.shuffle = int(cfg.pixel_shuffle)
        if cfg.name_or_path:
            self.encoder, self.image_size, mean, std = _load_pretrained(Path(cfg.name_or_path), cfg.trust_remote_code)
        else:
            from transformers import ViTConfig, ViTModel

            vc = ViTConfig(
                image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_size=cfg.hidden_size,
                num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                intermediate_size=cfg.intermediate_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            )
            self.encoder = ViTModel(vc, add_pooling_layer=False)
            self.image_size, mean, std = cfg.image_size, list(cfg.image_mean), list(cfg.image_std)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        hidden = self.encoder.config.hidden_size
        self.out_dim = hidden * self.shuffle * self.shuffle
        with torch.no_grad():
            probe = self.features(torch.zeros(1, 3, self.image_size, self.image_size))
        self.num_tokens = probe.shape[1]

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` in [0, 1], ``[B, 3, S, S]`` -> ``[B, num_tokens, out_dim]``."""
        x = (pixels - self.mean) / self.std
        out = self.encoder(pixel_values=x.to(next(self.encoder.parameters()).dtype), output_hidden_states=True)
        h = out.hidden_states[self.feature_layer]
        side = self.image_size // self.encoder.config.patch_size
        if h.shape[1] == side * side + 1:  # CLS first (ViT, CLIP)
            h = h[:, 1:]
        return pixel_shuffle(h, self.shuffle)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.features(pixels)


def _load_pretrained(path: Path, trust_remote_code: bool):
    from transformers import AutoConfig, AutoModel

    if not path.is_dir():
        raise ConfigError(f"model.vision.name_or_path: no such directory {path} (no hub downloads here)")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ConfigError(
                f"model.vision.name_or_path: {path} needs custom code; set model.vision.trust_remote_code=true "
                "if you trust it"
            ) from None
        raise ConfigError(f"model.vision.name_or_path: cannot load {path}: {str(e).splitlines()[0]}") from None
    mt = getattr(config, "model_type", "")
    try:
        if mt in ("siglip", "clip", "siglip2"):
            from transformers import CLIPVisionModel, SiglipVisionModel

            cls = SiglipVisionModel if mt.startswith("siglip") else CLIPVisionModel
            encoder = cls.from_pretrained(path).vision_model
        else:
            encoder = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)
            encoder = getattr(encoder, "vision_model", encoder)
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.vision.name_or_path: cannot load {path}: {str(e).splitlines()[0]}") from None
    vc = encoder.config
    size = vc.image_size if isinstance(vc.image_size, int) else vc.image_size[0]
    mean, std = [0.5] * 3, [0.5] * 3
    pp = path / "preprocessor_config.json"
    if pp.exists():
        meta = json.loads(pp.read_text())
        mean, std = meta.get("image_mean", mean), meta.get("image_std", std)
    return encoder, size, mean, std


def pretrain_tiny_vit(tower: VisionTower, records, steps: int, lr: float, seed: int, cache_dir) -> dict:
    """Pre-train the embedded tiny ViT like a real vision encoder arrives pre-trained: a linear probe task on
    the training images (no brand / logo of brand b / brand b's cues), cached by config + data + seed.

    Returns the encoder's state dict (also written to ``<cache_dir>/vlm/vit-<hash>.safetensors``)."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    brands = sorted({r.brand for r in records if r.brand})
    labels = [0 if r.kind == "none" else 1 + brands.index(r.brand) + (len(brands) if r.kind == "none_brand" else 0)
              for r in records]
    pixels = content_hash(b"".join(r.pixels.tobytes() for r in records), 64)
    blob = json.dumps({"cfg": repr(tower.encoder.config.to_dict()), "shuffle": tower.shuffle, "steps": steps, "lr": lr,
                       "seed": seed, "ids": [r.id for r in records], "labels": labels, "pixels": pixels, "v": 1},
                      sort_keys=True)
    path = Path(cache_dir) / "vlm" / f"vit-{content_hash(blob)}.safetensors"

    def train_into(tmp: Path) -> None:
        g = torch.Generator().manual_seed(seed)
        x = torch.stack([torch.from_numpy(r.pixels) for r in records])
        y = torch.tensor(labels)
        head = nn.Linear(tower.out_dim, 1 + 2 * len(brands))
        params = [*tower.parameters(), *head.parameters()]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        tower.train()
        for _ in tqdm(range(steps), desc="pre-training the tiny ViT", leave=False, mininterval=2.0):
            idx = torch.randint(len(x), (32,), generator=g)
            loss = nn.functional.cross_entropy(head(tower(x[idx].float() / 255).mean(1)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        tower.eval()
        state = {k: v.detach().clone().contiguous() for k, v in tower.encoder.state_dict().items()}
        save_file(state, str(tmp))

    return load_file(str(build_once(path, train_into, "the pre-trained tiny ViT")))
