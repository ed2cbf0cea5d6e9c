"""``build(cfg) -> (CaptionModule, BrandCaptionData)``: what ``vlm.train`` hands to ``common.run.train``."""

from __future__ import annotations

import logging

import torch
from omegaconf import OmegaConf

from vlm import policy
from vlm.data import BrandCaptionData
from vlm.models.vision import VisionTower, pretrain_tiny_vit
from vlm.module import CaptionModule

log = logging.getLogger(__name__)


def image_size_of(model_cfg) -> int:
    if model_cfg.vision.name_or_path:
        return -1  # known once the tower is loaded
    return int(model_cfg.vision.image_size)


def build(cfg):
    if cfg.model.get("kind") == "hf_vlm":  # a whole pre-trained VLM: vlm.hf_module
        from vlm.hf_module import build as build_hf

        return build_hf(cfg)
    torch.manual_seed(cfg.seed)
    model_cfg = cfg.model
    size = image_size_of(model_cfg)
    vision_probe = None
    if size < 0:
        vision_probe = VisionTower(model_cfg.vision)
        size = vision_probe.image_size
    dm = BrandCaptionData(cfg.data, size, cfg.paths.cache_dir, seed=cfg.seed)
    corpus, rows = dm.corpus()
    llm_path = policy.llm_dir(model_cfg, cfg.paths.cache_dir, corpus, rows, cfg.seed)
    torch.manual_seed(cfg.seed)
    vlm = policy.build_vlm(model_cfg, llm_path, trust_remote_code=bool(model_cfg.llm.trust_remote_code))
    embedded_vision = not model_cfg.vision.name_or_path
    if embedded_vision and model_cfg.vision.pretrain_steps > 0 and "train" in dm.records:
        state = pretrain_tiny_vit(vlm.vision, dm.records["train"], dm.pixels("train"), model_cfg.vision.pretrain_steps,
                                  model_cfg.vision.pretrain_lr, cfg.seed, cfg.paths.cache_dir)
        vlm.vision.encoder.load_state_dict(state)
        torch.manual_seed(cfg.seed)
    dm.attach(vlm.tokenizer, vlm.num_image_tokens)
    counts = policy.count_params(vlm)
    log.info("parameters: %s", counts)
    info = {
        "model": OmegaConf.to_container(model_cfg, resolve=True),
        "llm_path": str(llm_path),
        "embedded_llm": not model_cfg.llm.name_or_path,
        "embedded_vision": embedded_vision,
        "image_size": size,
        "crop": bool(cfg.data.crop),
        "tiles": {"max_num": int(cfg.data.tiles.max_num), "min_num": int(cfg.data.tiles.min_num)},
        "prompt": cfg.data.prompt,
        "brands": dm.brands,
        "aliases": dm.aliases,
    }
    module = CaptionModule(vlm, cfg.optim, cfg.get("scheduler"), cfg.lr_groups, cfg.eval, dm.matcher, export_info=info)
    return module, dm
