"""The trained captioner as a small Python API (what ``vlm.generate`` and a later HTTP server use).

    from vlm.captioner import Captioner
    cap = Captioner.load("logs/vlm.train/runs/<time>/captioner")   # or Captioner.load() for the newest run
    cap.caption(["a.png", pil_image], prompt=None, temperature=0.0, top_p=1.0, max_new_tokens=32)
    -> ["A shoe by Zorvik.", ...]

An export folder holds ``captioner.json`` (model config, prompt, image settings, brands), ``trainable.safetensors``
(only the tensors that trained: projector, vision tower, LoRA adapters or the LLM when fine-tuned) and, for
the embedded tiny LLM, the tiny base model it was trained on (``base_llm/``, a few MB; a real LLM is
referenced by its ``name_or_path`` instead). ``temperature=0`` means greedy decoding.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from common import io
from common.config import project_root
from common.errors import ConfigError
from vlm.chat import prompt_ids, user_message
from vlm.data import expand_image
from vlm.images import load_tiles, tiles_of
from vlm.policy import build_vlm, load_trainable, trainable_state_dict

EXPORT_FILE = "captioner.json"
WEIGHTS_FILE = "trainable.safetensors"


def save_captioner(vlm, out_dir: str | Path, info: dict) -> Path:
    """Write the export folder (atomically per file); returns it."""
    from safetensors.torch import save_file


    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = dict(info)
    if info.get("embedded_llm"):
        base = out_dir / "base_llm"
        if not base.exists():
            shutil.copytree(info["llm_path"], base, ignore=shutil.ignore_patterns("DONE"))
        info["llm_path"] = "base_llm"
    state = trainable_state_dict(vlm)
    if info.get("embedded_vision"):  # the embedded ViT was pre-trained into the cache: keep it even when frozen
        state.update({k: v.detach().clone().contiguous() for k, v in vlm.state_dict().items() if k.startswith("vision.")})
    tmp = out_dir / f".{WEIGHTS_FILE}.tmp"
    save_file(state, str(tmp))
    tmp.replace(out_dir / WEIGHTS_FILE)
    io.write_json(out_dir / EXPORT_FILE, info)
    return out_dir


def newest_export(root: str | Path | None = None) -> Path:
    root = Path(root) if root else project_root() / "logs" / "vlm.train"
    found = sorted(root.glob(f"**/captioner/{EXPORT_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ConfigError(f"no trained captioner under {root}; run `python -m vlm.train +exp=freeze_llm` first")
    return found[-1].parent


class Captioner:
    def __init__(self, vlm, info: dict, device: str = "cpu"):
        self.vlm = vlm.to(device).eval()
        self.info = info
        self.device = device
        self.image_size = int(info["image_size"])
        self.default_prompt = info.get("prompt", "Describe the product in the image.")
        self.brands = list(info.get("brands", []))
        tiles = info.get("tiles") or {}
        self.max_num, self.min_num = int(tiles.get("max_num", 1)), int(tiles.get("min_num", 1))

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | None = None) -> Captioner:
        """From an export folder (or a file in it); ``None``: the newest one under ``logs/vlm.train``."""
        from safetensors.torch import load_file


        path = Path(path) if path else newest_export()
        if path.is_file():
            path = path.parent
        if not (path / EXPORT_FILE).is_file():
            raise ConfigError(f"{path}: not a captioner export (no {EXPORT_FILE})")
        info = json.loads((path / EXPORT_FILE).read_text())
        if info.get("kind") == "hf_vlm":  # a whole pre-trained VLM (model=hf_vlm)
            from vlm.hf_captioner import HfCaptioner

            return HfCaptioner.load(path, info, device)
        model_cfg = OmegaConf.create(info["model"])
        llm_path = Path(info["llm_path"])
        if not llm_path.is_absolute():
            llm_path = path / llm_path
        vlm = build_vlm(model_cfg, llm_path, trust_remote_code=bool(model_cfg.llm.trust_remote_code))
        load_trainable(vlm, load_file(str(path / WEIGHTS_FILE)), f"{path / WEIGHTS_FILE}: does not match the model")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(vlm, info, device)

    def _tiles(self, images: Sequence) -> list[np.ndarray]:
        """Per image ``uint8 [tiles, 3, S, S]``, tiled as in training (one tile without tiling)."""
        from PIL import Image

        out = []
        for im in images:
            if isinstance(im, Image.Image):
                out.append(tiles_of(im, self.image_size, self.max_num, self.min_num))
            else:
                out.append(load_tiles(im, self.image_size, self.max_num, self.min_num, None, bool(self.info.get("crop")), 0.1))
        return out

    def caption(
        self,
        images: Sequence,
        prompt: str | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 32,
        num_beams: int = 1,
        use_cache: bool = True,
        seed: int | None = None,
        batch_size: int = 64,
    ) -> list[str]:
        """One caption per image (paths or PIL images). ``temperature=0``: greedy (or beam with ``num_beams>1``)."""

        tok = self.vlm.tokenizer
        ids = np.asarray(prompt_ids(tok, [user_message(prompt or self.default_prompt)], 1))
        image_id = self.vlm.image_token_id
        out: list[str] = []
        for i in range(0, len(images), batch_size):
            tiles = self._tiles(images[i : i + batch_size])
            prompts = [expand_image(ids, None, image_id, len(t) * self.vlm.num_image_tokens)[0].tolist() for t in tiles]
            px = torch.from_numpy(np.concatenate(tiles)).float().div(255.0).to(self.device)
            gen = self.vlm.generate(px, prompts, max_new_tokens=max_new_tokens,
                                    do_sample=temperature > 0, temperature=max(temperature, 1e-5), top_p=top_p,
                                    num_beams=num_beams, use_cache=use_cache, seed=seed)
            out += [t.strip() for t in tok.batch_decode(gen, skip_special_tokens=True)]
        return out
