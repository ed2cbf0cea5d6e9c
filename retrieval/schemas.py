"""Dataclass schemas of the retrieval config nodes: the one place their defaults are said.

Registered in Hydra's ConfigStore (``hydra_plugins/mlmono``) as ``schema/retrieval/<node>``; each YAML option of
the node starts ``defaults: [/schema/retrieval/<node>@_here_, _self_]`` and says only what differs, so a typo'd
key or a wrong type fails while the config is composed, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class SynthConfig:
    n_groups: int = 300
    min_per_group: int = 2
    max_per_group: int = 4
    image_size: int = 64
    seed: int = 0


@dataclass
class DataConfig:
    """The ``data`` node (checked at start-up)."""

    source: str = "synthetic"  # synthetic | shopee | deepmatcher | query_gallery | flag_jsonl
    path: str | None = None  # shopee CSV, DeepMatcher folder, query JSONL, or FlagEmbedding {query,pos,neg} JSONL
    gallery: str | None = None  # query_gallery: gallery JSONL
    fields_map: dict[str, str] | None = None  # query_gallery: {id|title|image|group: the file's key}, e.g. {title: name}
    train_group_size: int | None = None  # 1 pos + n-1 negatives per anchor (flag_jsonl: of its record's neg); null: num_negatives+1
    query_prompt: str = ""  # flag_jsonl: instruction before each query (a record's own `prompt` wins)
    passage_prompt: str = ""  # flag_jsonl: prefix of each passage (e.g. e5's "passage: ")
    image_dir: str | None = None
    fields: list[str] | None = None  # DeepMatcher text columns (default: name/title)
    synth: SynthConfig = field(default_factory=SynthConfig)
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    batch_size: int = 32
    num_negatives: int = 1
    negatives_file: str | None = None  # mined FlagEmbedding JSONL (see retrieval.mine)
    num_workers: int = 0
    on_bad_record: str = "error"
    seed: int = 0
    cache_dir: str = ".cache"


@dataclass
class ImageConfig:
    """A ``model.image`` tower (``retrieval.models.image``); null mean/std/interpolation/image_size: the model's own."""

    arch: str = MISSING  # open_clip name (retrieval-tiny-vit) | hf-hub:<org>/<name> | local-dir:<folder> | timm:<name> | hf:<folder>
    pretrained: str | None = None  # open_clip tag or weights file; timm: a weights file (null: random init)
    image_size: int | None = None
    proj_dim: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str | None = None  # bicubic | bilinear
    augment: bool = True  # training images get a random resized crop (scale 0.7-1); false: the eval transform


@dataclass
class OpenClipTextConfig:
    """``model.text.arch=open_clip``: the text tower of the image tower's open_clip model (same space)."""

    arch: str = "open_clip"
    proj_dim: int | None = None


@dataclass
class ModelConfig:
    """The ``model`` node: towers (``text``/``image``: null or their keyword arguments) and the loss."""

    text: Any = None  # null | transformers tower options (retrieval.models.text) | open_clip ({arch: open_clip})
    image: ImageConfig | None = None
    text_weight: float = 0.5
    loss: str = "infonce"
    temperature: float = 0.05
    arcface: Any = field(default_factory=lambda: {"margin": 0.3, "scale": 30.0, "subcenters": 1})
    at_least: int = 1
    symmetric: bool = False  # InfoNCE in both directions (anchor -> positives and positive -> anchors)
    reranker: Any = None  # set (exp=reranker): train the cross-encoder on the data's labelled pairs instead


# Node -> schema, checked at start-up (common.config.validate) and registered as schema/retrieval/<node>.
SCHEMAS: dict[str, Any] = {"data": DataConfig, "model": ModelConfig}
