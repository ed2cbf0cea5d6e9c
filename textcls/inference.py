"""Saved checkpoints at work: load, read an evaluation file, predict, and combine several models.

Combinations (``combine=``) of checkpoints that share a label space:

* ``intersection`` — a label is on only where every model says so (precision; the team's BERT ∩ TextCNN);
* ``union`` — where any model says so (recall);
* ``mean`` — average probabilities and thresholds, then decode;
* ``two_stage`` — the first checkpoint is the main multi-label / hierarchical tagger, every further one a
  binary model for one (rare) label (trained with ``+exp=two_stage data.positive_label=...``) whose
  probability and threshold replace the main model's column for that label.

Hierarchical outputs are made consistent again after every combination (no sub-tag without its gate).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from common import checkpoints
from common.data.records import check_utf8, read_jsonl
from common.errors import ConfigError, DataError
from textcls import decoding
from textcls.data import TextDataset, _jsonl_doc, collate, read_toutiao
from textcls.module import TextClassifier
from textcls.synth import Doc

COMBINE = ("single", "intersection", "union", "mean", "two_stage")


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


@torch.no_grad()
def predict_probs(model: TextClassifier, docs: Sequence[Doc], batch_size: int = 128, labelled: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    enc = model.encoder
    targets = model.space.encode_many(docs) if labelled else np.zeros((len(docs), len(model.space.labels)), np.float32)
    ds = TextDataset(docs, enc.encode_many([d.text for d in docs]), targets)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=collate(enc.pad_id))
    probs, _, _ = model.predict_loader(loader)
    return probs, (targets if labelled else None)


def combine(models: Sequence[TextClassifier], docs: Sequence[Doc], mode: str = "single", batch_size: int = 128, labelled: bool = True):
    """``(space, probs, pred, targets|None)`` of one model or a combination of several."""
    if mode not in COMBINE:
        raise ConfigError(f"combine: expected one of {COMBINE}, got {mode!r}")
    if mode == "single" and len(models) != 1:
        raise ConfigError(f"combine: {len(models)} checkpoints need combine=intersection|union|mean|two_stage")
    main = models[0]
    space = main.space
    probs, targets = predict_probs(main, docs, batch_size, labelled)
    thr = main.thresholds.cpu().numpy().copy()
    if mode == "single":
        return space, probs, main.decode(probs), targets
    others = [(m, predict_probs(m, docs, batch_size, False)[0]) for m in models[1:]]
    if mode == "two_stage":
        for m, p in others:
            if m.space.task != "binary" or m.space.labels[0] not in space.index:
                raise ConfigError(f"ckpt: a two-stage member must be a binary model for one of {space.labels}")
            j = space.index[m.space.labels[0]]
            probs[:, j] = p[:, 0]
            thr[j] = float(m.thresholds[0])
        return space, probs, main.decode(probs, thr), targets
    for m, _ in others:
        if m.space.labels != space.labels or m.space.task != space.task:
            raise ConfigError("ckpt: ensemble members must share task and labels")
    if mode == "mean":
        probs = np.mean([probs] + [p for _, p in others], axis=0)
        thr = np.mean([thr] + [m.thresholds.cpu().numpy() for m, _ in others], axis=0)
        return space, probs, main.decode(probs, thr), targets
    preds = [main.decode(probs)] + [m.decode(p) for m, p in others]
    pred = np.logical_and.reduce(preds) if mode == "intersection" else np.logical_or.reduce(preds)
    pred = pred.astype(int)
    if space.task == "hierarchical":
        pred = decoding.enforce_hierarchy(pred, space.parents)
    probs = np.mean([probs] + [p for _, p in others], axis=0)
    return space, probs, pred, targets
