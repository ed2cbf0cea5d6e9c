"""Building the captioner from config and applying the training policy.

* ``build_vlm(model_cfg, ...)``: vision tower + LLM (real by path, or the embedded tiny one) + projector;
* ``apply_policy``: freeze / unfreeze vision, projector and LLM; LoRA (peft) on the LLM only;
  gradient checkpointing of both towers; every trainable parameter in fp32 (frozen parts keep the dtype
  ``model.<part>.dtype`` loaded them in, e.g. bf16);
* ``build_hf_vlm`` / ``apply_hf_policy``: the same for a whole pre-trained VLM (``model=hf_vlm``);
* ``param_groups``: one optimizer group per trainable part with its own learning rate;
* ``trainable_state_dict``: only what trained (what a checkpoint and an export keep).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from common.errors import ConfigError
from vlm.models import llm as llm_lib
from vlm.models.vision import VisionTower, enable_checkpointing, torch_dtype
from vlm.models.vlm import VLM

log = logging.getLogger(__name__)

GROUPS = ("vision", "projector", "llm")


def llm_dir(model_cfg, cache_dir, corpus: list[str], rows: list[dict], seed: int) -> Path:
    if model_cfg.llm.name_or_path:
        return Path(model_cfg.llm.name_or_path)
    return llm_lib.build_tiny(model_cfg.llm, cache_dir, corpus, rows, seed)


def build_vlm(model_cfg, llm_path: str | Path, trust_remote_code: bool = False) -> VLM:
    dtype = torch_dtype(model_cfg.llm.get("dtype", "auto"), "model.llm.dtype")
    llm, tokenizer = llm_lib.load(llm_path, trust_remote_code=trust_remote_code, dtype=dtype)
    vision = VisionTower(model_cfg.vision)
    vlm = VLM(vision, llm, tokenizer, model_cfg.projector.type)
    apply_policy(vlm, model_cfg)
    return vlm


def apply_policy(vlm: VLM, model_cfg) -> None:
    lora = model_cfg.lora
    if lora.enabled and model_cfg.train_llm:
        raise ConfigError("model.train_llm: LoRA trains adapters on a frozen LLM; set train_llm=false with lora")
    vlm.vision.requires_grad_(bool(model_cfg.train_vision))
    vlm.projector.requires_grad_(bool(model_cfg.train_projector))
    vlm.llm.requires_grad_(bool(model_cfg.train_llm))
    if lora.enabled:
        from peft import LoraConfig, get_peft_model

        names = {n.rsplit(".", 1)[-1] for n, _ in vlm.llm.named_modules()}
        missing = [t for t in lora.target_modules if t not in names]
        if missing:
            raise ConfigError(f"model.lora.target_modules: no module named {missing} in the LLM")
        pc = LoraConfig(r=int(lora.r), lora_alpha=float(lora.alpha), lora_dropout=float(lora.dropout),
                        target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM")
        vlm.llm = get_peft_model(vlm.llm, pc)
    if not any(p.requires_grad for p in vlm.parameters()):
        raise ConfigError("model: nothing to train (train_vision, train_projector, train_llm all false, no LoRA)")
    if model_cfg.gradient_checkpointing:
        enable_checkpointing(vlm.llm)
        if not vlm.vision.enable_gradient_checkpointing():
            log.warning("model.gradient_checkpointing: the vision tower %s has no checkpointable layers",
                        type(vlm.vision.encoder).__name__)
    upcast_trainable(vlm)
    # Frozen parts run in eval mode (no dropout), whatever Lightning does with .train().
    vlm.frozen_modules = [m for m in (vlm.vision, vlm.projector, vlm.llm) if not any(p.requires_grad for p in m.parameters())]


def build_hf_vlm(model_cfg):
    """``model=hf_vlm``: a whole pre-trained VLM (``vlm.models.hf_vlm.HfVLM``) under the same policy."""
    from vlm.models.hf_vlm import HfVLM, load

    hf, processor = load(model_cfg)
    vlm = HfVLM(hf, processor)
    apply_hf_policy(vlm, model_cfg)
    return vlm


def apply_hf_policy(vlm, model_cfg) -> None:
    """Freeze / train each part of a whole VLM, LoRA on its language model's linear layers only (peft injects the
    adapters into ``vlm.hf`` in place, so parameter names stay ``hf.*``), fp32 trainables, casts at the seams."""
    from torch import nn

    from vlm.models.hf_vlm import part_of

    lora = model_cfg.lora
    if lora.enabled and model_cfg.train_llm:
        raise ConfigError("model.train_llm: LoRA trains adapters on a frozen language model; set train_llm=false with lora")
    if lora.enabled:
        from peft import LoraConfig, get_peft_model

        names = [n for n, m in vlm.hf.named_modules()
                 if part_of(n) == "llm" and isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in lora.target_modules]
        found = {n.rsplit(".", 1)[-1] for n in names}
        missing = [t for t in lora.target_modules if t not in found]
        if missing:
            raise ConfigError(f"model.lora.target_modules: no linear layer named {missing} in the language model")
        pc = LoraConfig(r=int(lora.r), lora_alpha=float(lora.alpha), lora_dropout=float(lora.dropout),
                        target_modules=names, bias="none")
        vlm.__dict__["peft"] = get_peft_model(vlm.hf, pc)
    # peft froze everything but the adapters: the part flags come after it, then the adapters train again
    for part, flag in (("vision", model_cfg.train_vision), ("projector", model_cfg.train_projector),
                       ("llm", model_cfg.train_llm)):
        vlm.set_part(part, bool(flag))
    for n, p in vlm.hf.named_parameters():
        if "lora_" in n:
            p.requires_grad_(True)
    if not any(p.requires_grad for p in vlm.parameters()):
        raise ConfigError("model: nothing to train (train_vision, train_projector, train_llm all false, no LoRA)")
    if model_cfg.gradient_checkpointing:
        enable_checkpointing(vlm.hf)
        vlm.hf.enable_input_require_grads()  # frozen embeddings: the checkpointed blocks still get a grad
    upcast_trainable(vlm)
    vlm.cast_at_seams()
    vlm.frozen_modules = [m for m in vlm.part_modules() if not any(p.requires_grad for p in m.parameters())]


def upcast_trainable(vlm: VLM) -> None:
    """Trainable parameters in fp32 (the optimiser state and updates in full precision); frozen ones as loaded."""
    cast = [n for n, p in vlm.named_parameters() if p.requires_grad and p.dtype != torch.float32]
    for _, p in vlm.named_parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if cast:
        log.info("%d trainable tensors upcast to fp32 (e.g. %s)", len(cast), cast[0])


def group_of(name: str) -> str:
    return name.split(".", 1)[0]


def param_groups(vlm: VLM, lr: float, weight_decay: float, lr_groups, group_of=group_of) -> list[dict]:
    """One optimiser group per trainable part at ``lr_groups.<part>`` (else ``lr``); no decay on biases and norms.
    ``group_of(parameter name) -> part``: the composed model's names start with the part (a whole VLM's do not)."""
    lrs = {g: lr_groups.get(g) for g in GROUPS}
    groups = []
    for g in GROUPS:
        params = [p for n, p in vlm.named_parameters() if p.requires_grad and group_of(n) == g]
        if params:
            group_lr = lrs[g] if lrs[g] is not None else lr
            decay = [p for p in params if p.ndim >= 2]
            no_decay = [p for p in params if p.ndim < 2]
            groups.append({"params": decay, "lr": group_lr, "weight_decay": weight_decay, "name": g})
            if no_decay:
                groups.append({"params": no_decay, "lr": group_lr, "weight_decay": 0.0, "name": f"{g}_nd"})
    return groups


def trainable_names(vlm: VLM) -> set[str]:
    return {n for n, p in vlm.named_parameters() if p.requires_grad}


def trainable_state_dict(vlm: VLM) -> dict[str, torch.Tensor]:
    keep = trainable_names(vlm)
    return {k: v.detach().clone().contiguous() for k, v in vlm.state_dict().items() if k in keep}


def load_trainable(vlm, state: dict[str, torch.Tensor], what: str) -> None:
    """Put ``state`` (what a run trained: ``trainable_state_dict``) into ``vlm``; a state that misses a trainable
    tensor or holds an unknown one is one ConfigError line starting with ``what``."""
    own = dict(vlm.named_parameters())
    missing = [k for k in own if own[k].requires_grad and k not in state]
    unknown = [k for k in state if k not in own]
    if missing or unknown:
        raise ConfigError(f"{what} (missing {missing[:3]}, unknown {unknown[:3]})")
    vlm.load_state_dict(state, strict=False)


def count_params(vlm: VLM, group_of=group_of) -> dict[str, int]:
    out = {}
    for g in GROUPS:
        ps = [p for n, p in vlm.named_parameters() if group_of(n) == g]
        out[g] = sum(p.numel() for p in ps)
        out[f"{g}_trainable"] = sum(p.numel() for p in ps if p.requires_grad)
    return out
