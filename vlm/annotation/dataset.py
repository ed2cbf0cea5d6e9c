"""The labelled items to annotate: a JSONL file ``{id, image, <label_key>}`` or the embedded synthetic set."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.data.images import check_image
from common.data.records import read_jsonl
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

    items = read_jsonl(path, validate, on_bad_record=on_bad_record, unique="id")  # type: ignore[arg-type]
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
