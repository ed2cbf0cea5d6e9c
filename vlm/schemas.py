"""Dataclass schemas of the vlm config nodes: a typo'd key or a wrong type fails at start-up with its path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class SynthSchema:
    seed: int = 0
    image_size: int = 64
    brands: int = 6
    train_logo_per_brand: int = 110
    train_none: int = 220
    train_none_brand_per_brand: int = 35
    eval_logo_per_brand: int = 30
    eval_none: int = 60
    eval_none_brand_per_brand: int = 10
    none_brand_named: float = 1.0


@dataclass
class CaptionCleanSchema:
    enabled: bool = True
    max_chars: int = 400
    min_chars: int = 2
    max_repeat_ngram: int = 3  # an n-gram (n=1..4 words) repeated more than this many times in a row = a loop
    cut_at_last_stop: bool = True
    max_garbage_ratio: float = 0.3


@dataclass
class TilesSchema:
    """InternVL dynamic tiling: the image resized to the grid of ``image_size`` tiles (i x j <= max_num) whose
    aspect ratio is closest to its own, plus a thumbnail of the whole image when there is more than one tile."""

    max_num: int = 1  # 1 = one square image, no tiling (InternVL uses 12)
    min_num: int = 1


@dataclass
class DataSchema:
    source: str = "synthetic"  # synthetic | jsonl
    synthetic: SynthSchema = field(default_factory=SynthSchema)
    train_file: str | None = None
    val_file: str | None = None
    test_file: str | None = None
    image_root: str | None = None
    val_fraction: float = 0.1
    on_bad_record: str = "error"
    batch_size: int = 32
    eval_batch_size: int = 100
    num_workers: int = 0  # DataLoader workers: images are decoded there, one sample at a time
    tiles: TilesSchema = field(default_factory=TilesSchema)
    max_image_pixels: int = 89_478_485  # larger images (width x height, read from the header) are bad records
    crop: bool = False
    crop_margin: float = 0.1
    with_desc: bool = False
    min_brand_samples: int = 1
    brand_aliases: str | None = None
    train_eval_size: int = 300
    prompt: str = "Describe the product in the image."
    clean: CaptionCleanSchema = field(default_factory=CaptionCleanSchema)


@dataclass
class VisionSchema:
    name_or_path: str | None = None
    trust_remote_code: bool = False  # InternViT needs true: an explicit opt-in
    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 256
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    dtype: str = "auto"  # auto (the checkpoint's own) | bf16 | fp32: storage of the loaded weights; what trains is fp32
    feature_layer: int = -1  # hidden-state index the projector reads (LLaVA uses -2)
    pixel_shuffle: int = 2  # 1 = off; 2 = 4x fewer image tokens, 4x wider
    # The embedded tiny ViT is pre-trained (cached) on the training images, as a real encoder arrives
    # pre-trained; 0 = train it from scratch. Ignored with name_or_path.
    pretrain_steps: int = 400
    pretrain_lr: float = 0.001


@dataclass
class ProjectorSchema:
    type: str = "mlp2x_gelu"  # mlp2x_gelu | linear


@dataclass
class LLMSchema:
    name_or_path: str | None = None
    trust_remote_code: bool = False
    dtype: str = "auto"  # auto (the checkpoint's own) | bf16 | fp32: storage of the loaded weights; what trains is fp32
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    vocab_size: int = 512
    pretrain_steps: int = 500
    pretrain_lr: float = 0.003
    pretrain_batch_size: int = 32


@dataclass
class LoraSchema:
    enabled: bool = False
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class ModelSchema:
    vision: VisionSchema = field(default_factory=VisionSchema)
    projector: ProjectorSchema = field(default_factory=ProjectorSchema)
    llm: LLMSchema = field(default_factory=LLMSchema)
    lora: LoraSchema = field(default_factory=LoraSchema)
    train_vision: bool = True
    train_projector: bool = True
    train_llm: bool = False
    gradient_checkpointing: bool = False


@dataclass
class HfVlmSchema:
    """``model=hf_vlm``: a whole pre-trained VLM (``AutoModelForImageTextToText`` + its ``AutoProcessor``: LLaVA-1.5,
    LLaVA-NeXT, Qwen2-VL / Qwen2.5-VL, InternVL-hf). Its parts keep the composed model's names: ``vision`` (the
    tower), ``projector`` (LLaVA's / InternVL's multi_modal_projector, Qwen2-VL's visual merger), ``llm``."""

    kind: str = "hf_vlm"  # what vlm.build dispatches on (the composed model has no kind)
    name_or_path: str = MISSING  # a local dir saved by save_pretrained (model + processor)
    trust_remote_code: bool = False
    dtype: str = "auto"  # auto (the checkpoint's own) | bf16 | fp32: storage of the loaded weights; what trains is fp32
    lora: LoraSchema = field(default_factory=LoraSchema)  # on the language model only
    train_vision: bool = False
    train_projector: bool = True
    train_llm: bool = False
    gradient_checkpointing: bool = False
    max_length: int | None = None  # longer training sequences are cut; a cut that leaves no assistant token fails


@dataclass
class LrGroupsSchema:
    """Learning rate of each trainable part; null: ``optim.lr``."""

    vision: float | None = None
    projector: float | None = None
    llm: float | None = None


@dataclass
class EvalSchema:
    max_new_tokens: int = 24
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    grid_samples: int = 24


@dataclass
class IngestColumnsSchema:
    """Which column of the product table holds what (null: the table has none; ``id`` null = the row number)."""

    id: str | None = "id"
    image: str = "image"  # a path (relative to the table's folder or ingest image_root), file:// or http(s) URL
    brand: str | None = "brand"
    title: str | None = "title"
    description: str | None = "description"


@dataclass
class FetchSchema:
    """How ``python -m vlm.ingest`` fetches images into its content-addressed cache."""

    workers: int = 8  # fetches in flight at once, over all hosts
    per_host: int = 4  # ... and at most this many to one host
    timeout_s: float = 10.0  # connect and read timeout of one http(s) attempt
    retries: int = 2  # connection errors, timeouts, 408/429/5xx; other 4xx are final
    backoff_s: float = 0.5  # urllib3's backoff factor: waits of backoff_s * 2**(retry - 1)
    max_bytes: int = 50_000_000  # a larger download is rejected (too_large)
    user_agent: str = "mlmono-vlm-ingest/0.1"


@dataclass
class BrandNormSchema:
    """Brand spellings: NFKC, case, spacing and punctuation fold into one key; ``aliases`` maps the canonical
    name to other spellings of it; a key without an alias is shown in its most frequent spelling."""

    aliases: dict[str, list[str]] = field(default_factory=dict)
    aliases_file: str | None = None  # the same mapping as JSON or YAML (common.metrics.brand.load_aliases)


@dataclass
class CaptionsSchema:
    """``+annotate=captions``: brand-aware product captions from a teacher, cleaned in tokens, brand-checked."""

    # Fields: {known} (one line per known field of the product), {brand}, {title}, {description} ("" when absent)
    prompt: str = (
        "Write one caption for the product in the image: what it is, its colour and material, and its brand. "
        "Name the brand exactly as given; if no brand is given, name it only when it is visible.\n{known}"
    )
    known_lines: dict[str, str] = field(
        default_factory=lambda: {"brand": "Brand: {value}", "title": "Title: {value}", "description": "Description: {value}"}
    )
    no_known: str = "Nothing else is known about the product."
    fields: list[str] = field(default_factory=lambda: ["title", "description"])  # record fields the prompt may use
    tokenizer: str = "words"  # words (a word, a CJK character or a punctuation mark = one token) | an HF tokenizer dir
    max_tokens: int | None = None  # cleaned captions are cut to this many tokens (at the last full stop); null: generation.max_tokens
    require_brand: bool = True  # a labelled item's caption must name its brand (case-insensitive, aliases)
    min_brand_samples: int = 1  # brands with fewer kept captions are dropped (the >= N filter)
    brands: BrandNormSchema = field(default_factory=BrandNormSchema)


@dataclass
class ExportSchema:
    """``python -m vlm.export``: a trained captioner as a plain transformers VLM (``vlm.exporting``)."""

    ckpt: str = "???"  # a .ckpt file or a run dir (as vlm.eval takes them), or a captioner export dir
    out: str = "???"  # the folder to write; refused when it is an input, or not empty without overwrite
    overwrite: bool = False  # replace a non-empty out (never an input)
    dtype: str = "fp32"  # fp32 | bf16: the dtype of every exported tensor
    check_jsonl: str | None = None  # records (id, image) to caption both ways after writing: the round trip
    check_limit: int = 100  # at most this many of them
    max_new_tokens: int = 24  # of the round trip's greedy captions
    package: str = "vlm"
    task_name: str = "vlm.export"
    paths: Any = None  # the shared paths group


SCHEMAS: dict[str, Any] = {
    "data": DataSchema,
    "model": ModelSchema,
    "lr_groups": LrGroupsSchema,
    "eval": EvalSchema,
}

# Also registered (schema/vlm/<node>), not checked by vlm.train: the cleaning limits and the captions preset of
# python -m vlm.annotate, the nodes of python -m vlm.ingest, the whole primary config of python -m vlm.export,
# and model=hf_vlm's model node (checked through schemas_for).
NODES: dict[str, Any] = {**SCHEMAS, "clean": CaptionCleanSchema, "captions": CaptionsSchema,
                         "ingest_columns": IngestColumnsSchema, "fetch": FetchSchema, "brand_norm": BrandNormSchema,
                         "export": ExportSchema, "hf_vlm": HfVlmSchema}


def schemas_for(cfg) -> dict[str, Any]:
    """The schemas a job's config is checked against: ``model`` is a ``HfVlmSchema`` node for ``model=hf_vlm``."""
    if cfg.get("model") is not None and cfg.model.get("kind") == "hf_vlm":
        return {**SCHEMAS, "model": HfVlmSchema}
    return SCHEMAS
