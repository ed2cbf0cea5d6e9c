"""The export folder: ``config.json`` + safetensors of the standard class, its processor, a generation config
(greedy, the tokenizer's EOS and pad) and ``export.json`` (where it came from, the layout, the prompt).

The folder is written beside its destination and renamed into place, so a failed export leaves nothing
half-written; ``out`` is refused when it is (or holds) an input, or is a non-empty folder without
``overwrite``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from common.errors import ConfigError
from vlm.exporting.layout import Layout, hf_model, plan
from vlm.exporting.processor import write_processor

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def dtype_of(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"dtype: must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def check_out(out: str | Path, inputs: dict[str, Path], overwrite: bool) -> Path:
    out = Path(out).absolute()
    for key, path in inputs.items():
        p = Path(path).resolve()
        if out.resolve() == p or out.resolve() in p.parents:
            raise ConfigError(f"out: {out} is (or holds) the input {key}={path}; writing it would destroy the input")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} is a file, expected a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"out: {out} is not empty; give an empty or new folder, or overwrite=true to replace it")
    return out


def merged(cap) -> None:
    """LoRA adapters merged into the LLM's weights (peft ``merge_and_unload``), in place."""
    if hasattr(cap.vlm.llm, "merge_and_unload"):
        cap.vlm.llm = cap.vlm.llm.merge_and_unload()


def _generation_config(cap):
    from transformers import GenerationConfig

    tok = cap.vlm.tokenizer
    own = cap.vlm.llm.generation_config
    return GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=False,
                            num_beams=1, min_new_tokens=own.min_new_tokens, max_new_tokens=32)


def replace_dir(out: str | Path, write) -> Path:
    """``write(tmp)`` fills a folder beside ``out`` that is then renamed into place (an old ``out`` goes only once
    the new one is complete), so a failed export leaves nothing half-written."""
    out = Path(out).absolute()
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if out.exists():
            old = out.parent / f".{out.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export(cap, out: str | Path, dtype: str = "fp32", source: str = "", overwrite: bool = False) -> Layout:
    """Write ``cap`` (LoRA merged first, in place) as a plain transformers VLM into ``out``; returns the layout."""
    torch_dtype = dtype_of(dtype)
    layout = plan(cap)
    merged(cap)
    cap.vlm.to("cpu")
    cap.vlm.tokenizer.padding_side = "left"  # batched generation, as vlm.models.vlm.VLM.generate pads
    model = hf_model(cap, layout, cap.vlm.image_token_id, torch_dtype)
    model.generation_config = _generation_config(cap)
    meta = {"source": source, "class": layout.cls_name, "layout": layout.__dict__, "dtype": dtype,
            "prompt": cap.default_prompt, "image_size": cap.image_size,
            "tiles": {"max_num": cap.max_num, "min_num": cap.min_num}, "brands": cap.brands}

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        write_processor(cap, layout, tmp)
        (tmp / "export.json").write_text(json.dumps(meta, indent=2))

    replace_dir(out, write)
    return layout
