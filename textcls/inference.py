"""Saved checkpoints at work: load, read an evaluation file, predict, and combine several models.

Combinations (``combine=``) of checkpoints that share a label space: ``intersection``, ``union``, ``mean`` and
``two_stage`` (binary members trained with ``+exp=two_stage data.positive_label=...``), defined once in
:mod:`textcls.ensemble`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common import checkpoints
from common.data.records import check_utf8, read_jsonl
from common.errors import ConfigError, DataError
from textcls.data import _jsonl_doc, read_toutiao
from textcls.ensemble import COMBINE, combine_outputs
from textcls.module import TextClassifier
from textcls.synth import Doc

__all__ = ["COMBINE", "combine", "detect_format", "load_checkpoint", "predict_probs", "read_eval_file", "read_texts"]


def load_checkpoint(path: str | Path, key: str = "ckpt") -> TextClassifier:
    return checkpoints.load_module(TextClassifier, path, key)


def detect_format(path: Path) -> str:
    with check_utf8(path).open(encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                return "toutiao" if "_!_" in line and not line.lstrip().startswith("{") else "jsonl"
    return "jsonl"


def read_eval_file(path: str | Path, model: TextClassifier, fmt: str = "auto", on_bad_record: str = "error", labelled: bool = True) -> list[Doc]:
    """Records of ``path`` checked against ``model``'s labels; a bad record is ``file:line: reason``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    space = model.space
    if fmt == "toutiao":
        docs = read_toutiao(path, on_bad_record=on_bad_record)
        for i, d in enumerate(docs):  # toutiao names: only multiclass refuses an unknown class
            if space.task == "multiclass" and d.labels[0] not in space.index:
                raise DataError(f"{path}:{i + 1}: label {d.labels[0]!r} is not one of the model's classes")
        return docs
    if fmt != "jsonl":
        raise ConfigError(f"format: expected auto, jsonl or toutiao, got {fmt!r}")
    parse = _jsonl_doc(None, None)

    def validate(rec: dict) -> Doc:
        doc = parse(rec)
        if labelled and "doc_label" not in rec:
            raise ValueError("missing field 'doc_label'")
        if labelled:
            space.encode(doc.labels)  # raises ValueError naming an unknown label
        return doc

    return read_jsonl(path, validate, on_bad_record=on_bad_record)


def read_texts(path: str | Path) -> list[Doc]:
    """Plain text, one text per line (blank lines skipped), or JSONL with ``text`` / ``doc_token``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix in (".jsonl", ".json") or detect_format(path) == "jsonl" and path.read_text(encoding="utf-8-sig").lstrip().startswith("{"):
        return read_jsonl(path, _jsonl_doc(None, None))
    docs = [Doc(line.strip(), ()) for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not docs:
        raise DataError(f"{path}: no texts")
    return docs


def predict_probs(model: TextClassifier, docs: Sequence[Doc], batch_size: int = 128, labelled: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """``(probs, targets|None)`` of ``model`` on ``docs`` (:meth:`TextClassifier.predict_docs`)."""
    return model.predict_docs(docs, batch_size, labelled)


def combine(models: Sequence[TextClassifier], docs: Sequence[Doc], mode: str = "single", batch_size: int = 128, labelled: bool = True):
    """``(space, probs, pred, targets|None)`` of one model or a combination of several (:mod:`textcls.ensemble`)."""
    if mode not in COMBINE:
        raise ConfigError(f"combine: expected one of {COMBINE}, got {mode!r}")
    if mode == "single" and len(models) != 1:
        raise ConfigError(f"combine: {len(models)} checkpoints need combine=intersection|union|mean|two_stage")
    main = models[0]
    probs, targets = predict_probs(main, docs, batch_size, labelled)
    others = [(m, predict_probs(m, docs, batch_size, False)[0]) for m in models[1:]]
    probs, pred = combine_outputs(main, probs, main.thresholds.cpu().numpy(), others, mode)
    return main.space, probs, pred, targets
