"""``build(cfg) -> (TextClassifier, TextDataModule)``, the one place a config becomes objects."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError
from textcls.data import TextDataModule
from textcls.module import TextClassifier
from textcls.schemas import SCHEMAS, DataConfig, ModuleConfig
from textcls.vectors import embedding_matrix

__all__ = ["SCHEMAS", "build", "data_config"]


def data_config(cfg: DictConfig) -> DataConfig:
    data = OmegaConf.to_container(cfg.data, resolve=True)  # interpolations such as ${paths.shared_dir} first
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), data))


def build(cfg: DictConfig) -> tuple[TextClassifier, TextDataModule]:
    data_cfg = data_config(cfg)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    module = OmegaConf.to_container(cfg.module, resolve=True)
    module_cfg = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(ModuleConfig), module), resolve=True)
    pretrained = model_cfg.get("name_or_path") or None
    dm = TextDataModule(data_cfg, pretrained_tokenizer=pretrained)
    weights = None
    if data_cfg.vectors:
        if "embedding_dim" not in model_cfg:
            raise ConfigError("data.vectors: only models with an embedding_dim (TextCNN) take pretrained vectors")
        weights = embedding_matrix(data_cfg.vectors, dm.encoder.vocab.itos, int(model_cfg["embedding_dim"]), cfg.seed)
    module = TextClassifier(
        model=model_cfg,
        space=dm.space.state,
        encoder=dm.encoder.state,
        module=module_cfg,
        label_counts=dm.label_counts,
        n_train=len(dm.train),
        embedding_weights=weights,
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None,
    )
    return module, dm
