"""The labelled items to annotate: a JSONL file ``{id, image, <label_key>}`` or the embedded synthetic set."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.data.images import check_image
from common.errors import ConfigError, DataError
from vlm import synth

from .classes import ClassSet


@dataclass(frozen=True)
class Item:
    id: str
    image: Path
    label: str
    record: dict = field(default_factory=dict, compare=False, hash=False)

    def image_digest(self) -> str:
        return hashlib.sha1(self.image.read_bytes()).hexdigest()


def read_items(path: str | Path, classes: ClassSet, label_key: str = "brand", on_bad_record: str = "error", limit: int | None = None) -> list[Item]:
    """Every record validated up front: ``file:line: problem`` for a missing id/image/label, an unknown label,
    a missing or corrupt image, a duplicate id."""
    path = Path(path)

    def validate(r: dict) -> Item:
        if not isinstance(r, dict):
            raise ValueError("expected a JSON object")
        rid = r.get("id")
        if not isinstance(rid, str | int) or isinstance(rid, bool) or str(rid) == "":
            raise ValueError("missing or empty 'id'")
        rid = str(rid)
        if not isinstance(r.get("image"), str) or not r["image"]:
            raise ValueError("missing 'image'")
        if label_key not in r:
            raise ValueError(f"missing label field '{label_key}'")
        label = classes.label_of(r[label_key])
        image = Path(r["image"])
        image = image if image.is_absolute() else (path.parent / image)
        check_image(image)
        return Item(rid, image.resolve(), label, r)

    from common.data.records import read_json_records

    items = read_json_records(path, validate, on_bad_record=on_bad_record, unique="id")  # JSONL or a LLaVA .json array
    if not items:
        raise DataError(f"{path}: no usable records")
    return items[:limit] if limit else items


def synthetic_items(spec: dict[str, Any], cache_dir: str | Path) -> Path:
    """The vlm package's synthetic brand set (:mod:`vlm.synth`), rendered into the cache; its split's JSONL."""
    from dataclasses import fields


    spec = dict(spec)
    split = spec.pop("split", "test")
    known = {f.name for f in fields(synth.SynthConfig)}
    unknown = set(spec) - known
    if unknown:
        raise ConfigError(f"data.synthetic: unknown key(s) {', '.join(sorted(unknown))} (known: split, {', '.join(sorted(known))})")
    if split not in synth.SPLIT_SEEDS:
        raise ConfigError(f"data.synthetic.split: expected one of {', '.join(synth.SPLIT_SEEDS)}, got {split!r}")
    root = synth.ensure(synth.SynthConfig(**spec), cache_dir)
    return root / f"{split}.jsonl"


@dataclass(frozen=True)
class CaptionItem:
    """A product to caption: its image, its brand label (None: unknown) and the known text fields."""

    id: str
    image: Path
    brand: str | None
    fields: dict = field(default_factory=dict, compare=False, hash=False)
    record: dict = field(default_factory=dict, compare=False, hash=False)

    def image_digest(self) -> str:
        return hashlib.sha1(self.image.read_bytes()).hexdigest()


def read_caption_items(path: str | Path, brand_key: str = "brand", fields: tuple[str, ...] = ("title", "description"),
                       on_bad_record: str = "error", limit: int | None = None) -> list[CaptionItem]:
    """``vlm.ingest``'s records (JSONL or a LLaVA JSON array): id and image required, the brand and the text
    fields optional, no caption needed; ``file:line: problem`` for a bad one, a duplicate id included."""
    from common.data.records import read_json_records

    path = Path(path)

    def validate(r: dict) -> CaptionItem:
        rid = r.get("id")
        if not isinstance(rid, str | int) or isinstance(rid, bool) or str(rid) == "":
            raise ValueError("missing or empty 'id'")
        if not isinstance(r.get("image"), str) or not r["image"]:
            raise ValueError("missing 'image'")
        brand = r.get(brand_key)
        if brand is not None and (not isinstance(brand, str) or not brand.strip()):
            raise ValueError(f"field '{brand_key}' must be a non-empty string or null, got {brand!r}")
        image = Path(r["image"])
        image = image if image.is_absolute() else (path.parent / image)
        check_image(image)
        known = {k: r[k].strip() for k in fields if isinstance(r.get(k), str) and r[k].strip()}
        return CaptionItem(str(rid), image.resolve(), brand.strip() if brand else None, known, r)

    items = read_json_records(path, validate, on_bad_record=on_bad_record, unique="id")
    if not items:
        raise DataError(f"{path}: no usable records")
    return items[:limit] if limit else items
