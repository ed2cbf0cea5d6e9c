"""Image towers by name, each with its own preprocessing, L2-normalised.

``model.image.arch`` names the tower:

- an open_clip built-in name (``ViT-B-16-SigLIP``), with ``pretrained`` a tag or a local weights file;
- ``hf-hub:<org>/<name>`` (open_clip's scheme; offline it is read from the local Hugging Face cache);
- ``local-dir:/path`` (open_clip's scheme: a folder with ``open_clip_config.json`` and its weights);
- ``timm:<name>``: any timm model with an embedding head (``num_classes=0``), ``pretrained`` a local weights
  file (default: random init);
- ``hf:<folder>``: a transformers image encoder (``save_pretrained``: CLIP / SigLIP models or their vision
  parts, ViT, DINOv2 ...) with its image processor's mean / std / size / resample.

Mean / std / size / interpolation are the model's own: open_clip's final ``preprocess_cfg`` (from the tag, the
folder's ``open_clip_config.json`` or, for a built-in name with a weights file, the name's published tags) or
timm's ``pretrained_cfg``; ``mean`` / ``std`` / ``interpolation`` / ``image_size`` override them. Where the
model says nothing open_clip's OpenAI constants apply, and the tower says so in a warning.

Two tiny architectures are registered (``open_clip.add_model_config``) for the embedded default (trained from
scratch); their text configs use open_clip's own BPE vocabulary so their text tower works too.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import ConfigError
from retrieval.schemas import ImageConfig

log = logging.getLogger(__name__)

_TEXT = {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
TINY_CONFIGS = {
    "retrieval-tiny-vit": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 96, "head_width": 32, "patch_size": 8},
        "text_cfg": _TEXT,
    },
    "retrieval-tiny-rn": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
        "text_cfg": _TEXT,
    },
}
SCHEMES = "an open_clip name, hf-hub:<org>/<name>, local-dir:<folder>, timm:<name> or hf:<transformers folder>"
INTERPOLATIONS = ("bicubic", "bilinear")  # what open_clip.image_transform resizes with
_registered = False


def register_tiny() -> None:
    """Register the tiny configs through open_clip's public ``add_model_config`` (one JSON file each, in a
    temp folder removed once read: the name is the file's stem)."""
    global _registered
    import open_clip

    if _registered or all(n in open_clip.list_models() for n in TINY_CONFIGS):
        _registered = True
        return
    with tempfile.TemporaryDirectory(prefix="retrieval-open-clip-configs-") as tmp:
        folder = Path(tmp)
        for name, cfg in TINY_CONFIGS.items():
            (folder / f"{name}.json").write_text(json.dumps(cfg), encoding="utf-8")
        open_clip.add_model_config(folder)  # reads the files now; later rescans keep what it read
    _registered = True


def _one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _tag_preprocess(arch: str) -> dict:
    """mean/std/interpolation/resize_mode that every published tag of the open_clip name ``arch`` agrees on
    (a local weights file of that name was trained with them)."""
    import open_clip

    cfgs = [open_clip.get_pretrained_cfg(arch, t) for t in open_clip.list_pretrained_tags_by_model(arch)]
    out = {}
    for key in ("mean", "std", "interpolation", "resize_mode"):
        values = {tuple(v) if isinstance(v, list | tuple) else v for c in cfgs if (v := c.get(key)) is not None}
        if len(values) == 1:
            out[key] = values.pop()
    return out


def _create_open_clip(arch: str, pretrained: str | None, image_size: int | None, force: dict):
    """``(clip model, tokenizer name, whether the model's own config gave mean/std)``."""
    import open_clip

    if arch.startswith("local-dir:"):
        folder = Path(arch[len("local-dir:"):]).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"model.image.arch: no such folder {folder} (local-dir: names a folder with "
                              "open_clip_config.json and its weights)")
        conf = folder / "open_clip_config.json"
        if not conf.is_file():
            raise ConfigError(f"model.image.arch: {conf} is missing (local-dir: needs open_clip's config file)")
        try:
            own = "mean" in (json.loads(conf.read_text(encoding="utf-8")).get("preprocess_cfg") or {})
        except (ValueError, AttributeError) as e:
            raise ConfigError(f"model.image.arch: {conf} is not an open_clip config ({_one_line(e)})") from None
        if pretrained:
            raise ConfigError("model.image.pretrained: a local-dir: tower loads the weights in its folder; set it to null")
    elif arch.startswith("hf-hub:"):
        own = True  # open_clip reads the repo's preprocess_cfg
        if pretrained:
            raise ConfigError("model.image.pretrained: an hf-hub: tower loads the repo's weights; set it to null")
    else:
        register_tiny()
        if arch not in open_clip.list_models():
            raise ConfigError(f"model.image.arch: unknown open_clip architecture {arch!r} ({SCHEMES})")
        own = bool(pretrained) and not os.path.isfile(str(pretrained))  # a tag carries its preprocess_cfg
        if pretrained and os.path.isfile(str(pretrained)):
            tags = _tag_preprocess(arch)
            own = "mean" in tags and "std" in tags
            force = {**tags, **force}
    try:
        clip = open_clip.create_model(arch, pretrained=pretrained or None, force_image_size=image_size,
                                      force_preprocess_cfg=force or None)
    except Exception as e:  # open_clip raises RuntimeError / ValueError / OSError / hub errors, multi-line
        if arch.startswith("hf-hub:"):
            raise ConfigError(f"model.image.arch: {arch} is not in the local Hugging Face cache and the hub cannot "
                              f"be reached ({type(e).__name__}); download it once, or name a local-dir:<folder>") from None
        key = "model.image.arch" if arch.startswith("local-dir:") or not pretrained else "model.image.pretrained"
        raise ConfigError(f"{key}: cannot load {pretrained or arch!r} for {arch} ({_one_line(e)})") from None
    if not arch.startswith(("local-dir:", "hf-hub:")) and not pretrained:
        own = True  # trained from scratch here: any normalisation is its own
    return clip, own


def _create_timm(name: str, pretrained: str | None, image_size: int | None):
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"model.image.arch: unknown timm model {name!r} (timm.list_models() names them)")
    kwargs: dict = {"num_classes": 0}
    if pretrained:
        if not os.path.isfile(str(pretrained)):
            raise ConfigError(f"model.image.pretrained: no weights file at {pretrained} (a timm: tower loads a "
                              "local file; null trains from random init)")
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(pretrained)})
    try:
        try:
            model = timm.create_model(name, **kwargs, **({"img_size": image_size} if image_size else {}))
        except TypeError:  # a CNN takes any size: no img_size argument
            model = timm.create_model(name, **kwargs)
    except Exception as e:
        raise ConfigError(f"model.image.pretrained: cannot load {pretrained} into timm:{name} ({_one_line(e)})") from None
    data = timm.data.resolve_model_data_config(model)
    return model, data


class TransformersVisual(nn.Module):
    """A transformers image encoder as a trunk: ``get_image_features`` of a CLIP / SigLIP model (its
    projection), else the vision model's ``pooler_output``, else its first (CLS) token."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        cfg = model.config
        if hasattr(model, "get_image_features"):
            self.width = int(getattr(cfg, "projection_dim", None) or cfg.vision_config.hidden_size)
        else:
            self.width = int(getattr(cfg, "hidden_size", None) or cfg.hidden_sizes[-1])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "get_image_features"):
            out = self.model.get_image_features(pixel_values=pixels)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        out = self.model(pixel_values=pixels)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            return out.last_hidden_state[:, 0]
        return pooled.flatten(1)


_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's codes in a transformers image processor


def _create_transformers(path: str, image_size: int | None):
    """``hf:<folder>``: a transformers image encoder saved with ``save_pretrained`` and its image processor's
    mean / std / size / resample."""
    from transformers import AutoImageProcessor, AutoModel

    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(f"model.image.arch: hf:{path} is not a transformers model folder (no config.json)")
    try:
        model = AutoModel.from_pretrained(folder)
        proc = AutoImageProcessor.from_pretrained(folder)
    except Exception as e:
        raise ConfigError(f"model.image.arch: cannot load hf:{path} ({_one_line(e)})") from None
    size = getattr(proc, "crop_size", None) if getattr(proc, "do_center_crop", False) else None
    size = size or getattr(proc, "size", None) or {}
    if isinstance(size, int):
        side = size
    else:  # a dict, or transformers 5's SizeDict
        get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
        side = get("height") or get("shortest_edge")
    pp = {"size": image_size or int(side or 224), "mean": tuple(proc.image_mean), "std": tuple(proc.image_std),
          "interpolation": _RESAMPLE.get(int(getattr(proc, "resample", 3)), "bicubic"), "resize_mode": "shortest"}
    return TransformersVisual(model), pp


class ImageTower(nn.Module):
    def __init__(self, arch: str, pretrained: str | None = ImageConfig.pretrained,
                 image_size: int | None = ImageConfig.image_size, proj_dim: int | None = ImageConfig.proj_dim,
                 mean: list[float] | None = ImageConfig.mean, std: list[float] | None = ImageConfig.std,
                 interpolation: str | None = ImageConfig.interpolation, augment: bool = ImageConfig.augment,
                 keep_text: bool = False):
        super().__init__()
        import open_clip

        if not isinstance(arch, str) or not arch.strip():
            raise ConfigError(f"model.image.arch: expected {SCHEMES}, got {arch!r}")
        force = {k: tuple(v) if isinstance(v, list | tuple) else v
                 for k, v in (("mean", mean), ("std", std), ("interpolation", interpolation)) if v is not None}
        if interpolation is not None and interpolation not in INTERPOLATIONS:
            raise ConfigError(f"model.image.interpolation: expected {'|'.join(INTERPOLATIONS)} or null (the model's "
                              f"own), got {interpolation!r}")
        for key in ("mean", "std"):
            if key in force and len(force[key]) != 3:
                raise ConfigError(f"model.image.{key}: expected 3 values (R, G, B), got {list(force[key])}")
        self.clip_text = None  # the open_clip model without its visual trunk (keep_text: the text tower's)
        self.kind = "timm" if arch.startswith("timm:") else "transformers" if arch.startswith("hf:") else "open_clip"
        if self.kind == "transformers":
            if keep_text:
                raise ConfigError(f"model.text.arch=open_clip: {arch} is not an open_clip model")
            self.visual, pp = _create_transformers(arch[len("hf:"):], image_size)
            pp.update(force)
            width, own = self.visual.width, True
        elif self.kind == "timm":
            if keep_text:
                raise ConfigError(f"model.text.arch=open_clip: {arch} has no text tower (it needs an open_clip image tower)")
            self.visual, data = _create_timm(arch[len("timm:"):], pretrained, image_size)
            pp = {"size": image_size or data["input_size"][-1], "mean": data["mean"], "std": data["std"],
                  "interpolation": data.get("interpolation", "bicubic"), "resize_mode": "shortest", **force}
            width = getattr(self.visual, "head_hidden_size", None) or self.visual.num_features
            own = True
        else:
            clip, own = _create_open_clip(arch, pretrained, image_size, force)
            self.visual = clip.visual
            pp = dict(getattr(self.visual, "preprocess_cfg", {}) or {})
            width = getattr(self.visual, "output_dim", None) or clip.text_projection.shape[-1]
            if keep_text:
                clip.visual = None
                self.clip_text = clip
            del clip
        if not own and not ({"mean", "std"} <= set(force)):
            log.warning("model.image.arch=%s: the model's config gives no mean/std; using open_clip's OpenAI constants "
                        "%s / %s (set model.image.mean / model.image.std if it was trained with others)",
                        arch, tuple(pp.get("mean", ())), tuple(pp.get("std", ())))
        size = pp.get("size", image_size or 224)
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        self.mean = tuple(float(x) for x in pp.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(float(x) for x in pp.get("std", open_clip.OPENAI_DATASET_STD))
        self.interpolation = str(pp.get("interpolation") or "bicubic")
        if self.interpolation not in INTERPOLATIONS:  # e.g. a timm model trained with 'nearest'
            log.warning("model.image.arch=%s: interpolation %r is not one open_clip's transforms do; using bicubic "
                        "(set model.image.interpolation to choose)", arch, self.interpolation)
            self.interpolation = "bicubic"
        self.resize_mode = str(pp.get("resize_mode") or "shortest")
        self.arch, self.augment = arch, bool(augment)
        self.proj = nn.Linear(width, proj_dim, bias=False) if proj_dim else nn.Identity()
        self.dim = proj_dim or width
        self.width = width

    def transforms(self) -> tuple:
        """``(train, eval)`` torchvision transforms matching the tower's size, normalisation and interpolation
        (``augment=False``: training sees the eval transform, no random crop)."""
        import open_clip

        kw = {"mean": self.mean, "std": self.std, "interpolation": self.interpolation, "resize_mode": self.resize_mode}
        test = open_clip.image_transform(self.image_size, False, **kw)
        if not self.augment:
            return test, test
        return open_clip.image_transform(self.image_size, True, aug_cfg={"scale": (0.7, 1.0)}, **kw), test

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.visual(images)), dim=-1)
