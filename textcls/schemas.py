"""Dataclass schemas of the textcls config nodes: the one place their defaults are said.

Registered in Hydra's ConfigStore (``hydra_plugins/mlmono``) as ``schema/textcls/<node>``; each YAML option of
the node starts ``defaults: [/schema/textcls/<node>@_here_, _self_]`` and says only what differs, so a typo'd
key or a wrong type fails while the config is composed, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class SynthConfig:
    n: int = 12000
    seed: int = 0
    label_noise: float = 0.01
    char_noise: float = 0.05


@dataclass
class DataConfig:
    """The ``data`` node (checked at start-up: unknown keys and wrong types fail with their path)."""

    source: str = "synthetic"
    task: str = "hierarchical"
    train_file: str | None = None
    val_file: str | None = None
    test_file: str | None = None
    taxonomy: str | None = None
    positive_label: str | None = None
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    split_seed: int = 0
    tokenizer: str = "char"
    max_len: int = 96
    min_freq: int = 2
    max_vocab: int | None = None
    vectors: str | None = None
    keywords: bool = False
    batch_size: int = 64
    sampler: str = "none"
    sampler_power: float = 0.5
    oversample_min_count: int = 50
    num_workers: int = 0
    on_bad_record: str = "error"
    synth: SynthConfig = field(default_factory=SynthConfig)


@dataclass
class ModuleConfig:
    """The ``module`` node: training and decoding settings."""

    loss: str = "bce"  # bce | focal (multiclass always uses cross-entropy)
    pos_weight: Any = "auto"  # null | auto (= (n - pos) / pos, clipped at pos_weight_max) | a number | one per label
    pos_weight_max: float = 30.0
    focal_gamma: float = 2.0
    threshold: float = 0.5
    tune_thresholds: bool = True  # per-label thresholds that maximise each label's val F1
    top_k: int = 0
    knn_k: int = 0  # > 0: labels in knn_labels are decided by a vote of the k nearest training texts
    knn_labels: list[str] = field(default_factory=list)
    knn_threshold: float = 0.4
    # Test-time ensemble with other trained checkpoints of the same labels (intersection | union | mean).
    ensemble_mode: str | None = None
    ensemble_ckpts: list[str] = field(default_factory=list)


@dataclass
class PretrainConfig:
    """The ``pretrain`` node of ``python -m textcls.pretrain``."""

    out: str = MISSING
    init_from: str | None = None  # a local transformers checkpoint to adapt instead of a random tiny BERT
    epochs: int = 20
    mlm_probability: float = 0.15
    batch_size: int = 64
    min_freq: int = 1


# Node -> schema, registered as schema/textcls/<node>; python -m textcls.train checks SCHEMAS at start-up.
SCHEMAS: dict[str, Any] = {"data": DataConfig, "module": ModuleConfig}
NODES: dict[str, Any] = {**SCHEMAS, "pretrain": PretrainConfig}
