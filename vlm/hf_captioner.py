"""The ``captioner/`` export of a ``model=hf_vlm`` run, its Python API, and the plain transformers export.

The folder holds ``captioner.json`` (``kind: hf_vlm``, the model node with the base VLM's absolute
``name_or_path``, prompt, crop, brands) and ``trainable.safetensors`` (only what trained: adapters, projector,
...); ``vlm.captioner.Captioner.load`` hands such a folder to :class:`HfCaptioner`, so ``vlm.generate`` and
``vlm.serve`` run it unchanged. ``HfCaptioner.save_pretrained(DIR)`` writes the trained model as a plain
transformers VLM (LoRA merged) with its processor: ``AutoModelForImageTextToText.from_pretrained(DIR)`` +
``AutoProcessor.from_pretrained(DIR)`` give the same greedy tokens with no code of this repository.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

from common import io
from common.errors import ConfigError
from vlm.chat import IMAGE_TOKEN
from vlm.hf_data import load_image, render
from vlm.models.hf_vlm import HfVLM
from vlm.policy import build_hf_vlm, load_trainable, trainable_state_dict

EXPORT_FILE = "captioner.json"
WEIGHTS_FILE = "trainable.safetensors"


def save_captioner(vlm: HfVLM, out_dir: str | Path, info: dict) -> Path:
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{WEIGHTS_FILE}.tmp"
    save_file(trainable_state_dict(vlm), str(tmp))
    tmp.replace(out_dir / WEIGHTS_FILE)
    io.write_json(out_dir / EXPORT_FILE, info)
    return out_dir


class HfCaptioner:
    def __init__(self, vlm: HfVLM, info: dict, device: str = "cpu"):
        self.vlm = vlm.to(device).eval()
        self.info = info
        self.device = device
        self.default_prompt = info.get("prompt", "Describe the product in the image.")
        self.brands = list(info.get("brands", []))

    @classmethod
    def load(cls, path: str | Path, info: dict, device: str | None = None) -> HfCaptioner:
        from safetensors.torch import load_file

        path = Path(path)
        vlm = build_hf_vlm(OmegaConf.create(info["model"]))
        load_trainable(vlm, load_file(str(path / WEIGHTS_FILE)), f"{path / WEIGHTS_FILE}: does not match the model")
        return cls(vlm, info, device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def _inputs(self, images: Sequence, prompt: str | None) -> dict:
        from PIL import Image

        text = render(self.vlm.processor, [{"role": "user", "content": f"{IMAGE_TOKEN}\n{prompt or self.default_prompt}"}],
                      add_generation_prompt=True)
        crop = bool(self.info.get("crop"))
        pil = [im.convert("RGB") if isinstance(im, Image.Image) else load_image(str(im), None, crop, 0.1) for im in images]
        enc = self.vlm.processor(images=pil, text=[text] * len(pil), padding=True, padding_side="left", return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def prompt_tokens(self, image, prompt: str | None = None) -> int:
        """How many ids the VLM reads for ``image`` + ``prompt``: the processor's chat-templated prompt with the
        image tokens it expands (``vlm.serve``'s ``usage.prompt_tokens``)."""
        return int(self._inputs([image], prompt)["input_ids"].shape[1])

    def generate_ids(self, images: Sequence, prompt: str | None = None, temperature: float = 0.0, top_p: float = 1.0,
                     max_new_tokens: int = 32, num_beams: int = 1, use_cache: bool = True, seed: int | None = None,
                     batch_size: int = 64) -> list[list[int]]:
        out: list[list[int]] = []
        for i in range(0, len(images), batch_size):
            out += self.vlm.generate(self._inputs(images[i : i + batch_size], prompt), max_new_tokens=max_new_tokens,
                                     do_sample=temperature > 0, temperature=max(temperature, 1e-5), top_p=top_p,
                                     num_beams=num_beams, use_cache=use_cache, seed=seed)
        return out

    def caption(self, images: Sequence, prompt: str | None = None, temperature: float = 0.0, top_p: float = 1.0,
                max_new_tokens: int = 32, num_beams: int = 1, use_cache: bool = True, seed: int | None = None,
                batch_size: int = 64) -> list[str]:
        """One caption per image (paths or PIL images); ``temperature=0``: greedy (or beam with ``num_beams>1``).
        The signature is :meth:`vlm.captioner.Captioner.caption`'s, so ``vlm.generate`` and ``vlm.serve`` take either."""
        ids = self.generate_ids(images, prompt, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                num_beams=num_beams, use_cache=use_cache, seed=seed, batch_size=batch_size)
        return [t.strip() for t in self.vlm.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def save_pretrained(self, out_dir: str | Path) -> Path:
        return self.vlm.save_pretrained(out_dir)


def from_checkpoint(model_cfg, ckpt: str | Path) -> HfVLM:
    """The model of a ``model=hf_vlm`` run (``model_cfg``: its ``model`` node) with a Lightning checkpoint's weights."""
    vlm = build_hf_vlm(model_cfg)
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as e:
        raise ConfigError(f"ckpt: cannot read {ckpt}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    load_trainable(vlm, {k.removeprefix("vlm."): v for k, v in state.items()},
                   f"ckpt: {ckpt} does not match model.name_or_path={model_cfg.name_or_path} with this policy")
    return vlm


def export_pretrained(model_cfg, ckpt: str | Path, out_dir: str | Path) -> Path:
    """``python -m vlm.export`` for a ``model=hf_vlm`` run: the checkpoint as a plain transformers VLM dir (LoRA merged)."""
    return from_checkpoint(model_cfg, ckpt).save_pretrained(out_dir)
