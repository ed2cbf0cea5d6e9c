"""A whole pre-trained VLM (``AutoModelForImageTextToText`` + its ``AutoProcessor``) under the composed captioner's
policy (``vlm.policy.build_hf_vlm``): its parameters named by part (``vision`` / ``projector`` / ``llm``), each part frozen or trained, LoRA
(peft) on the language model's linear layers only, trainable tensors in fp32 (frozen ones as loaded), and the
export as a plain transformers VLM dir with the LoRA merged.

Plain ``nn.Module`` (no Lightning). Families, by where transformers 5 keeps their parts:

==========================  ===========================  ===============================  ==============================
family                      vision                       projector                        llm
==========================  ===========================  ===============================  ==============================
LLaVA-1.5 / LLaVA-NeXT      ``model.vision_tower``       ``model.multi_modal_projector``  ``model.language_model``,
                                                         (+ NeXT's ``model.image_newline``) ``lm_head``
Qwen2-VL / Qwen2.5-VL       ``model.visual``             ``model.visual.merger``          same
InternVL-hf                 ``model.vision_tower``       ``model.multi_modal_projector``  same
==========================  ===========================  ===============================  ==============================
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn

from common.errors import ConfigError
from vlm.models.vision import torch_dtype

log = logging.getLogger(__name__)

# (path inside the transformers model, part): a parameter belongs to the part of the longest path it lies under.
PARTS = (
    ("model.vision_tower", "vision"),
    ("model.visual", "vision"),
    ("model.multi_modal_projector", "projector"),
    ("model.visual.merger", "projector"),
    ("model.image_newline", "projector"),
    ("model.language_model", "llm"),
    ("lm_head", "llm"),
)


def part_of(name: str) -> str | None:
    """``"vision"`` / ``"projector"`` / ``"llm"`` for a parameter or module name of the transformers model."""
    best, part = -1, None
    for prefix, p in PARTS:
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
            best, part = len(prefix), p
    return part


def load(model_cfg):
    """``(model, processor)`` from ``model.name_or_path``; every preprocessing setting from the dir's own files."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = Path(str(model_cfg.name_or_path))
    if not path.is_dir():
        raise ConfigError(f"model.name_or_path: no model dir at {path}")
    dtype = torch_dtype(model_cfg.dtype, "model.dtype")
    remote = bool(model_cfg.trust_remote_code)
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, trust_remote_code=remote)
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=remote)
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(f"model.name_or_path: {path} does not load as AutoModelForImageTextToText + AutoProcessor: "
                          f"{type(e).__name__}: {first}") from None
    if not getattr(processor, "chat_template", None):
        raise ConfigError(f"model.name_or_path: {path}: the processor has no chat template (chat_template.jinja)")
    if getattr(processor, "tokenizer", None) is None:
        raise ConfigError(f"model.name_or_path: {path}: {type(processor).__name__} has no tokenizer")
    return model, processor


class HfVLM(nn.Module):
    """``hf`` (the transformers model, LoRA layers injected in place) and its ``processor``."""

    def __init__(self, hf: nn.Module, processor):
        super().__init__()
        self.hf = hf
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.__dict__["peft"] = None  # the PeftModel around ``hf`` (not a submodule: parameter names stay hf.*)
        self.frozen_modules: list[nn.Module] = []
        outside = sorted({n.rsplit(".", 1)[0] for n, _ in hf.named_parameters() if part_of(n) is None})
        if outside:
            raise ConfigError(f"model.name_or_path: {type(hf).__name__} has parameters outside a vision tower, projector "
                              f"and language model (e.g. {outside[0]}): not a supported family")
        gen = hf.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        self.pad_id = gen.pad_token_id if gen.pad_token_id is not None else self.tokenizer.pad_token_id

    # ---- parts ----------------------------------------------------------------------------------------------
    def group_of(self, name: str) -> str | None:
        """The part of a parameter name of this module (``hf.model.visual.merger...`` -> ``projector``)."""
        return part_of(name.removeprefix("hf."))

    def set_part(self, part: str, flag: bool) -> None:
        """``requires_grad`` of every parameter of ``part`` (Qwen2-VL: the visual tower first, then its merger)."""
        for prefix, p in sorted(PARTS, key=lambda x: len(x[0])):
            if p != part:
                continue
            try:
                self.hf.get_submodule(prefix).requires_grad_(flag)
            except AttributeError:
                try:
                    self.hf.get_parameter(prefix).requires_grad_(flag)
                except AttributeError:
                    continue

    def part_modules(self) -> list[nn.Module]:
        out = []
        for prefix, _ in PARTS:
            try:
                out.append(self.hf.get_submodule(prefix))
            except AttributeError:
                continue
        return out

    def cast_at_seams(self) -> None:
        """Each part casts its floating-point inputs to its own dtype (a bf16 tower -> an fp32 projector -> a bf16
        LLM with fp32 adapters), as the composed model casts the tower's output to the projector's dtype."""
        for m in self.part_modules():
            m.register_forward_pre_hook(_cast_inputs, with_kwargs=True)

    # ---- loss and generation --------------------------------------------------------------------------------
    def _cast(self, inputs: dict) -> dict:
        """Pixel values in the vision tower's dtype (bf16 when it was loaded so)."""
        dtype = next(p.dtype for n, p in self.named_parameters() if self.group_of(n) == "vision")
        return {k: (v.to(dtype) if k == "pixel_values" else v) for k, v in inputs.items()}

    def forward(self, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
        return self.hf(**self._cast(inputs), labels=labels, use_cache=False).loss

    @torch.no_grad()
    def generate(self, inputs: dict, max_new_tokens: int = 32, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, num_beams: int = 1, use_cache: bool = True, seed: int | None = None) -> list[list[int]]:
        """New token ids per row of a left-padded prompt batch, cut at the model's EOS (its generation_config's)."""
        kw = dict(do_sample=do_sample, num_beams=num_beams, max_new_tokens=max_new_tokens, pad_token_id=self.pad_id,
                  use_cache=use_cache)
        if self.hf.generation_config.eos_token_id is None and self.eos_ids:
            kw["eos_token_id"] = self.eos_ids
        if do_sample:
            kw.update(temperature=temperature, top_p=top_p, top_k=0)
        if seed is not None:
            torch.manual_seed(seed)
        out = self.hf.generate(**self._cast(inputs), **kw)
        return [cut(row, self.eos_ids, self.pad_id) for row in out[:, inputs["input_ids"].shape[1]:].tolist()]

    # ---- export ---------------------------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path) -> Path:
        """A plain transformers VLM dir (LoRA merged into the language model, ``merge_and_unload``) with the
        processor: ``AutoModelForImageTextToText.from_pretrained(out_dir)`` + ``AutoProcessor`` need no code of
        this repository, in the dtype the model was loaded in. ``self`` keeps its adapters (the merge runs on a copy)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model = copy.deepcopy(self.peft).merge_and_unload() if self.peft is not None else self.hf
        # one storage dtype, the loaded one (the frozen parts'): the fp32 trainables are cast to it
        dtype = next((p.dtype for p in self.parameters() if not p.requires_grad), torch.float32)
        state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
        model.save_pretrained(out_dir, state_dict=state)
        self.processor.save_pretrained(out_dir)
        return out_dir


def _cast_inputs(module: nn.Module, args: tuple, kwargs: dict):
    """Floating-point tensor inputs of a part in the dtype of its own first parameter (the composed model casts
    the tower's output to the projector's dtype the same way)."""
    dtype = next(module.parameters()).dtype

    def cast(v):
        return v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != dtype else v

    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}


def cut(row: list[int], eos_ids: list[int], pad_id: int | None) -> list[int]:
    """Generated ids up to (not including) the first EOS, padding dropped."""
    for i, t in enumerate(row):
        if t in eos_ids:
            row = row[:i]
            break
    return [t for t in row if t != pad_id]
