"""``build(cfg) -> (module, datamodule)`` for ``run.train`` and the config schemas checked at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from retrieval.data import DataConfig, RetrievalDataModule


@dataclass
class ModelConfig:
    """The ``model`` node: towers (``text``/``image``: null or their keyword arguments) and the loss."""

    text: Any = None
    image: Any = None
    text_weight: float = 0.5
    loss: str = "infonce"
    temperature: float = 0.05
    lr: float = 1e-3
    weight_decay: float = 0.01
    arcface: Any = field(default_factory=lambda: {"margin": 0.3, "scale": 30.0, "subcenters": 1})
    at_least: int = 1
    warmup_steps: int = 0
    symmetric: bool = False  # InfoNCE in both directions (anchor -> positives and positive -> anchors)
    schedule: str = "constant"  # after warm-up: constant | linear (decay to 0 at the last step)
    reranker: Any = None  # set (exp=reranker): train the cross-encoder on the data's labelled pairs instead


SCHEMAS = {"data": DataConfig, "model": ModelConfig}


def data_config(node) -> DataConfig:
    if OmegaConf.is_config(node):  # resolve against the whole config (``seed: ${seed}``) before detaching
        node = OmegaConf.to_container(node, resolve=True)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), node))


def build(cfg):
    from retrieval.models.image import ImageTower
    from retrieval.module import RetrievalModule

    m = OmegaConf.to_container(cfg.model, resolve=True)
    if m.get("reranker"):
        return build_reranker(cfg, m["reranker"])
    m.pop("reranker", None)
    tower_cfg = {"text": m.pop("text"), "image": m.pop("image"), "text_weight": m.pop("text_weight")}
    transforms = ImageTower(**tower_cfg["image"]).transforms() if tower_cfg["image"] is not None else None
    dm = RetrievalDataModule(data_config(cfg.data), transforms)
    if tower_cfg["image"] is not None and not dm.catalog.has_images:
        from common.errors import ConfigError

        raise ConfigError("model.image: this data set has no images; set model.image=null")
    module = RetrievalModule(tower_cfg, num_classes=len(dm.labels), **m)
    return module, dm


def build_reranker(cfg, r: dict):
    from pathlib import Path

    from common.errors import ConfigError
    from retrieval.data import text_field
    from retrieval.rerank import PairDataModule, RerankerModule

    if not cfg.data.get("path"):
        raise ConfigError("data.path: the reranker needs a DeepMatcher folder with train/valid/test.txt pair splits")
    folder = Path(cfg.data.path)
    pairs = folder / "ditto_deepmatcher_splits" if (folder / "ditto_deepmatcher_splits").is_dir() else folder
    fields = list(cfg.data.fields) if cfg.data.get("fields") else (text_field(folder) if (folder / "tableA.csv").exists() else None)
    loss = r.get("loss", "bce")
    dm = PairDataModule(str(pairs), fields, batch_size=int(cfg.data.batch_size), loss=loss,
                        group_size=int(r.get("group_size", 4)), neg_per_pos=r.get("neg_per_pos", 3), seed=int(cfg.seed))
    dm.fingerprint = ""
    enc = {k: v for k, v in r.items() if k in ("name_or_path", "tokenizer", "max_length", "hidden_size", "num_layers", "num_heads")}
    module = RerankerModule(enc, loss=loss, lr=float(r.get("lr", 5e-5)))
    return module, dm
