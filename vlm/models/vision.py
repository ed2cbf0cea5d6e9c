"""Vision tower: a tiny ViT from a config by default, or a real HF vision checkpoint by path.

``name_or_path`` loads SigLIP / CLIP (their ``vision_model``), transformers' native ``InternVLVisionModel``
(the InternVL "-hf" checkpoints), remote-code InternViT (``trust_remote_code=true``, an explicit opt-in) or
any ``AutoModel`` vision encoder; every way a load can fail becomes one ``model.vision.name_or_path: ...``
error. Mean, std and input size come from the checkpoint's own ``preprocessor_config.json``.
``dtype`` (auto | bf16 | fp32) is the storage dtype of the loaded weights (auto: the checkpoint's own);
``vlm.policy`` makes whatever trains fp32. Features come from ``feature_layer`` of the hidden states
(LLaVA uses -2), the CLS token dropped when the tower has one, and an optional pixel shuffle (InternVL's)
that trades ``f*f`` neighbouring patches for ``f*f`` times the width.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


DTYPES = {"auto": "auto", "bf16": torch.bfloat16, "fp32": torch.float32}


def torch_dtype(value: str, key: str):
    """``auto | bf16 | fp32`` -> what ``from_pretrained(dtype=...)`` takes (``auto``: the checkpoint's own)."""
    if value not in DTYPES:
        raise ConfigError(f"{key}: must be one of {', '.join(DTYPES)}, got {value!r}")
    return DTYPES[value]


def _first(value) -> int:
    return int(value if isinstance(value, int) else value[0])


class VisionTower(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.feature_layer = int(cfg.feature_layer)
        self.shuffle = int(cfg.pixel_shuffle)
        if cfg.name_or_path:
            dtype = torch_dtype(cfg.get("dtype", "auto"), "model.vision.dtype")
            self.encoder, self.image_size, mean, std = load_pretrained(Path(cfg.name_or_path), cfg.trust_remote_code, dtype)
        else:
            from transformers import ViTConfig, ViTModel

            vc = ViTConfig(
                image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_size=cfg.hidden_size,
                num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                intermediate_size=cfg.intermediate_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            )
            self.encoder = ViTModel(vc, add_pooling_layer=False)
            self.image_size, mean, std = cfg.image_size, list(cfg.image_mean), list(cfg.image_std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        hidden = self.encoder.config.hidden_size
        self.patch_size = _first(self.encoder.config.patch_size)
        self.out_dim = hidden * self.shuffle * self.shuffle
        with torch.no_grad():
            probe = self.features(torch.zeros(1, 3, self.image_size, self.image_size))
        self.num_tokens = probe.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` in [0, 1], ``[B, 3, S, S]`` (B images or tiles) -> ``[B, num_tokens, out_dim]``."""
        x = (pixels.float() - self.mean) / self.std
        out = self.encoder(pixel_values=x.to(self.dtype), output_hidden_states=True)
        h = out.hidden_states[self.feature_layer]
        side = self.image_size // self.patch_size
        if h.shape[1] == side * side + 1:  # CLS first (ViT, CLIP, InternViT)
            h = h[:, 1:]
        return pixel_shuffle(h, self.shuffle)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.features(pixels)

    def enable_gradient_checkpointing(self) -> bool:
        """Recompute the encoder's layers in backward (non-reentrant); False when the encoder has no such layers.

        SigLIP's / CLIP's ``vision_model`` is a plain module inside their ``PreTrainedModel``: its layers are set
        the way ``PreTrainedModel.gradient_checkpointing_enable`` sets them."""
        from functools import partial

        from torch.utils.checkpoint import checkpoint

        enc = self.encoder
        if getattr(enc, "supports_gradient_checkpointing", False) and hasattr(enc, "gradient_checkpointing_enable"):
            enable_checkpointing(enc)
            return True
        layers = [m for m in enc.modules() if hasattr(m, "gradient_checkpointing")]
        for m in layers:
            m._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
            m.gradient_checkpointing = True
        return bool(layers)


def enable_checkpointing(model) -> None:
    """A transformers model's own (non-reentrant) gradient checkpointing, under its transformers 5 name."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _with_post_init(cls):
    """``cls`` whose instances end with ``post_init()`` when their ``__init__`` did not call it (remote-code
    InternViT's does not; transformers 5 then fails loading with AttributeError 'all_tied_weights_keys')."""

    class PostInit(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if not hasattr(self, "all_tied_weights_keys"):
                self.post_init()

    PostInit.__name__ = PostInit.__qualname__ = cls.__name__
    PostInit.__module__ = cls.__module__
    return PostInit


def _remote_class(config, path: Path):
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    ref = (getattr(config, "auto_map", None) or {}).get("AutoModel")
    if not ref:
        return None
    return _with_post_init(get_class_from_dynamic_module(ref, str(path)))


def _preprocessing(path: Path, vc) -> tuple[int, list[float], list[float]]:
    """``(size, mean, std)`` from the checkpoint's ``preprocessor_config.json`` (never a silent default)."""
    pp = path / "preprocessor_config.json"
    if not pp.is_file():
        raise ConfigError(f"model.vision.name_or_path: {path} has no preprocessor_config.json (image mean, std and "
                          "size come from the checkpoint's own files)")
    meta = json.loads(pp.read_text())
    mean, std = meta.get("image_mean"), meta.get("image_std")
    if mean is None or std is None:
        raise ConfigError(f"model.vision.name_or_path: {pp} has no image_mean / image_std")
    mean = [float(mean)] * 3 if isinstance(mean, int | float) else [float(v) for v in mean]
    std = [float(std)] * 3 if isinstance(std, int | float) else [float(v) for v in std]
    size = meta.get("crop_size") if meta.get("do_center_crop") else None
    size = size or meta.get("size") or vc.image_size
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    return _first(size), mean, std


def _load(path: Path, trust_remote_code: bool, dtype):
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ConfigError(
                f"model.vision.name_or_path: {path} needs custom code; set model.vision.trust_remote_code=true "
                "if you trust it"
            ) from None
        raise
    mt = getattr(config, "model_type", "")
    if mt in ("siglip", "clip", "siglip2"):
        from transformers import CLIPVisionModel, SiglipVisionModel

        cls = SiglipVisionModel if mt.startswith("siglip") else CLIPVisionModel
        model = cls.from_pretrained(path, dtype=dtype)
        return getattr(model, "vision_model", model)  # transformers 5.2x: the vision model is flat
    remote = _remote_class(config, path) if trust_remote_code else None
    if remote is not None:
        encoder = remote.from_pretrained(path, config=config, dtype=dtype)
    else:
        encoder = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code, dtype=dtype)
    for attr in ("vision_model", "vision_tower"):  # a full VLM / dual-tower checkpoint: its vision part
        encoder = getattr(encoder, attr, None) or encoder
    return encoder


def load_pretrained(path: Path, trust_remote_code: bool, dtype="auto"):
    """``(encoder, image size, mean, std)`` of a local vision checkpoint; any failure is one ConfigError line."""
    if not path.is_dir():
        raise ConfigError(f"model.vision.name_or_path: no such directory {path} (no hub downloads here)")
    try:
        encoder = _load(path, trust_remote_code, dtype)
    except ConfigError:
        raise
    except Exception as e:  # ImportError (a remote file's missing package), AttributeError, OSError, ...
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(f"model.vision.name_or_path: cannot load {path}: {type(e).__name__}: {first}") from None
    vc = encoder.config
    if not hasattr(vc, "hidden_size") or not hasattr(vc, "patch_size"):
        raise ConfigError(f"model.vision.name_or_path: {path} ({type(encoder).__name__}) is not a ViT-style vision "
                          "encoder (its config has no hidden_size / patch_size)")
    size, mean, std = _preprocessing(path, vc)
    return encoder, size, mean, std


def pretrain_tiny_vit(tower: VisionTower, records, images, steps: int, lr: float, seed: int, cache_dir) -> dict:
    """Pre-train the embedded tiny ViT like a real vision encoder arrives pre-trained: a linear probe task on
    the training images (no brand / logo of brand b / brand b's cues), cached by config + data + seed.
    ``images``: ``uint8 [N, 3, S, S]``, the records' pixels in order (the embedded set is small).

    Returns the encoder's state dict (also written to ``<cache_dir>/vlm/vit-<hash>.safetensors``)."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    brands = sorted({r.brand for r in records if r.brand})
    labels = [0 if r.kind == "none" else 1 + brands.index(r.brand) + (len(brands) if r.kind == "none_brand" else 0)
              for r in records]
    images = np.ascontiguousarray(images)
    pixels = content_hash(images.tobytes(), 64)
    blob = json.dumps({"cfg": repr(tower.encoder.config.to_dict()), "shuffle": tower.shuffle, "steps": steps, "lr": lr,
                       "seed": seed, "ids": [r.id for r in records], "labels": labels, "pixels": pixels, "v": 1},
                      sort_keys=True)
    path = Path(cache_dir) / "vlm" / f"vit-{content_hash(blob)}.safetensors"

    def train_into(tmp: Path) -> None:
        g = torch.Generator().manual_seed(seed)
        x = torch.from_numpy(images)
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
