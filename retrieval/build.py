"""``build(cfg) -> (module, datamodule)`` for ``run.train`` and the config schemas checked at start-up."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from common.config import validate
from common.errors import ConfigError
from retrieval.data import RetrievalDataModule, text_field
from retrieval.models.image import ImageTower
from retrieval.module import RetrievalModule
from retrieval.rerank import PairDataModule, RerankerModule
from retrieval.schemas import SCHEMAS, DataConfig, ModelConfig

log = logging.getLogger(__name__)

__all__ = ["SCHEMAS", "build", "build_reranker", "check_zero_shot", "data_config", "zero_shot_module",
           "zero_shot_unless_ckpt"]


def data_config(node) -> DataConfig:
    if OmegaConf.is_config(node):  # resolve against the whole config (``seed: ${seed}``) before detaching
        node = OmegaConf.to_container(node, resolve=True)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), node))


def _optim(cfg) -> dict:
    return {"optim": OmegaConf.to_container(cfg.optim, resolve=True),
            "scheduler": OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None}


def build(cfg):
    m = OmegaConf.to_container(cfg.model, resolve=True)
    if m.get("reranker"):
        return build_reranker(cfg, m["reranker"])
    m.pop("reranker", None)
    tower_cfg = {"text": m.pop("text"), "image": m.pop("image"), "text_weight": m.pop("text_weight")}
    if cfg.data.source == "flag_jsonl" and tower_cfg["image"] is not None:
        log.warning("data.source=flag_jsonl is text only: model.image dropped (model.image=null says so)")
        tower_cfg["image"] = None
    transforms = ImageTower(**tower_cfg["image"]).transforms() if tower_cfg["image"] is not None else None
    dm = RetrievalDataModule(data_config(cfg.data), transforms)
    if tower_cfg["image"] is not None and not dm.catalog.has_images:
        raise ConfigError("model.image: this data set has no images; set model.image=null")
    module = RetrievalModule(tower_cfg, num_classes=len(dm.labels), **m, **_optim(cfg))
    return module, dm


def check_zero_shot(cfg) -> None:
    """Without a checkpoint the ``model`` node must name its image tower (or drop it: ``model.image=null``)."""
    node = cfg.get("model")
    if node is None:
        raise ConfigError("ckpt: give a checkpoint, or build a zero-shot tower from config (model.image.arch=...)")
    if node.get("image") is not None and OmegaConf.is_missing(node.image, "arch"):
        raise ConfigError("model.image.arch: required without a checkpoint (give ckpt=<file>, or name the zero-shot "
                          "tower: an open_clip name, hf-hub:<org>/<name>, local-dir:<folder> or timm:<name>)")


def zero_shot_module(cfg) -> RetrievalModule:
    """The :class:`RetrievalModule` of ``cfg.model`` built untrained (no checkpoint): pretrained towers as they
    ship, the threshold its default (``eval`` also reports the best one on the data, ``f1_oracle``)."""
    import torch

    check_zero_shot(cfg)
    m = OmegaConf.to_container(cfg.model, resolve=True)
    if m.get("reranker"):
        raise ConfigError("model.reranker: a zero-shot eval scores a bi-encoder; drop the reranker node")
    torch.manual_seed(int(cfg.get("seed", 0)))  # random parts (a tiny tower, a projection) are reproducible
    module = RetrievalModule({"text": m["text"], "image": m["image"], "text_weight": m["text_weight"]},
                             loss=m["loss"], temperature=m["temperature"], at_least=m["at_least"])
    return module.eval()


def zero_shot_unless_ckpt(cfg) -> RetrievalModule | None:
    """``ckpt=null`` (``retrieval.index`` / ``match``): the untrained towers of ``cfg.model``, checked against its
    schema first; with a checkpoint, None (the caller loads it)."""
    if cfg.get("ckpt") is not None:
        return None
    check_zero_shot(cfg)
    validate(cfg, {"model": ModelConfig})
    return zero_shot_module(cfg)


def build_reranker(cfg, r: dict):
    """The cross-encoder (``+exp=reranker``: titles; ``+exp=matcher``: Ditto-style, every attribute) and its
    labelled pairs from ``data.path`` (Ditto's split files or DeepMatcher tables + pair CSVs)."""
    from functools import lru_cache

    if not cfg.data.get("path"):
        raise ConfigError("data.path: the reranker needs a folder of labelled pairs (Ditto's train/valid/test.txt, "
                          "or DeepMatcher tableA.csv, tableB.csv, train.csv, test.csv)")
    folder = Path(cfg.data.path)
    text = r.get("text", "fields")
    fields = list(cfg.data.fields) if cfg.data.get("fields") else None
    if fields is None and text == "fields" and (folder / "tableA.csv").exists():
        fields = text_field(folder)
    loss = r.get("loss", "bce")
    enc = {k: v for k, v in r.items() if k in ("name_or_path", "tokenizer", "max_length", "hidden_size", "num_layers", "num_heads")}
    serialisation = {"text": text, "fields": fields, "summarise": r.get("summarise"), "codes": bool(r.get("codes"))}
    module = RerankerModule(enc, loss=loss, pos_weight=float(r.get("pos_weight", 1.0)), serialisation=serialisation,
                            **_optim(cfg))
    tok = module.net.tokenizer
    cost = lru_cache(maxsize=None)(lambda w: max(1, len(tok.tokenize(w))))
    dm = PairDataModule(str(folder), fields, batch_size=int(cfg.data.batch_size), loss=loss,
                        group_size=int(r.get("group_size", 4)), neg_per_pos=r.get("neg_per_pos", 3), seed=int(cfg.seed),
                        text=text, summarise=r.get("summarise"), augment=r.get("augment"),
                        augment_p=float(r.get("augment_p", 0.5)), source=r.get("pairs", "auto"), cost=cost,
                        codes=bool(r.get("codes")), resample=bool(r.get("resample")))
    dm.fingerprint = ""
    return module, dm
