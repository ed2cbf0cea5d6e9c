"""The round trip: greedy tokens of the exported folder loaded by plain transformers
(``AutoModelForImageTextToText`` + ``AutoProcessor``, no code of this repository) against the captioner's own
(``vlm.models.vlm.VLM.generate``, as ``vlm.generate`` runs it), on the same images and prompt."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vlm.chat import prompt_ids, user_message
from vlm.data import expand_image


def _strip(row: list[int], eos: int | None, pad: int | None) -> list[int]:
    if eos is not None and eos in row:
        row = row[: row.index(eos)]
    return [t for t in row if t != pad]


def captioner_tokens(cap, images: Sequence, prompt: str | None = None, max_new_tokens: int = 24) -> list[list[int]]:
    """New token ids per image, computed as :meth:`vlm.captioner.Captioner.caption` computes its captions."""
    tok = cap.vlm.tokenizer
    ids = np.asarray(prompt_ids(tok, [user_message(prompt or cap.default_prompt)], 1))
    tiles = cap._tiles(images)
    prompts = [expand_image(ids, None, cap.vlm.image_token_id, len(t) * cap.vlm.num_image_tokens)[0].tolist()
               for t in tiles]
    px = torch.from_numpy(np.concatenate(tiles)).float().div(255.0).to(cap.device)
    return cap.vlm.generate(px, prompts, max_new_tokens=max_new_tokens)


def load(out_dir: str | Path, backend: str | None = None):
    """``(model, processor)`` of an export folder, the way any transformers user loads it. ``backend="pil"``: the
    image processor on PIL (bit-exact resizing; AutoProcessor's default is torchvision's, within one grey level
    of PIL's bicubic)."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

    kwargs = {"image_processor": AutoImageProcessor.from_pretrained(out_dir, backend=backend)} if backend else {}
    return (AutoModelForImageTextToText.from_pretrained(out_dir).eval(),
            AutoProcessor.from_pretrained(out_dir, **kwargs))


def hf_tokens(model, processor, images: Sequence, prompt: str, max_new_tokens: int = 24) -> list[list[int]]:
    """Greedy new token ids per image (PIL images) from the plain transformers load."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(images=list(images), text=[text] * len(images), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[:, inputs["input_ids"].shape[1]:].tolist()
    gc = model.generation_config
    eos = gc.eos_token_id[0] if isinstance(gc.eos_token_id, list) else gc.eos_token_id
    return [_strip(r, eos, gc.pad_token_id) for r in new]


def reference(cap, paths: Sequence[str | Path], prompt: str | None = None, max_new_tokens: int = 24,
              batch_size: int = 16) -> list[list[int]]:
    """The captioner's greedy tokens for image files ``paths`` (before the export merges LoRA into it)."""
    out: list[list[int]] = []
    for i in range(0, len(paths), batch_size):
        out += captioner_tokens(cap, [str(p) for p in paths[i : i + batch_size]], prompt, max_new_tokens)
    return out


def exported(out_dir: str | Path, paths: Sequence[str | Path], prompt: str, max_new_tokens: int = 24,
             batch_size: int = 16, backend: str | None = None) -> list[list[int]]:
    """The plain transformers load's greedy tokens for image files ``paths`` (opened with PIL)."""
    from PIL import Image

    model, processor = load(out_dir, backend)
    out: list[list[int]] = []
    for i in range(0, len(paths), batch_size):
        pil = [Image.open(p).convert("RGB") for p in paths[i : i + batch_size]]
        out += hf_tokens(model, processor, pil, prompt, max_new_tokens)
    return out


def agreement(paths: Sequence, ref: list[list[int]], got: list[list[int]]) -> dict:
    """``{n, same, mismatches: [(path, captioner tokens, transformers tokens)]}``."""
    bad = [(str(p), a, b) for p, a, b in zip(paths, ref, got, strict=True) if a != b]
    return {"n": len(paths), "same": len(paths) - len(bad), "mismatches": bad}
