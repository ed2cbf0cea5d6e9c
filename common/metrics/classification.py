"""Multi-label / multi-class classification metrics.

Inputs are 0/1 indicator matrices ``[n_samples, n_labels]`` (multi-class: one-hot, or pass label index
vectors to :func:`to_indicator`). Everything is computed by scikit-learn; this module only fixes the
choices (zero_division=0, which labels count for macro) and the report shapes the team reads.

A column is a label for every width, one included: a binary task is a one-column matrix whose metrics
are those of its positive label. scikit-learn would read an ``[n, 1]`` 0/1 array as a *binary* target with
class values 0 and 1 (so ``labels=[0]`` picks the negative class), which is why every call below goes
through :func:`_multilabel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import multilabel_confusion_matrix, precision_recall_fscore_support


def to_indicator(y: Sequence[int], n_labels: int) -> np.ndarray:
    out = np.zeros((len(y), n_labels), dtype=int)
    out[np.arange(len(y)), np.asarray(y, dtype=int)] = 1
    return out


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class LabelRow:
    label: str
    precision: float
    recall: float
    f1: float
    right: int  # true positives
    predict: int  # predicted positives
    standard: int  # gold positives


def _arrays(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int)
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(f"y_true and y_pred must be equal-shaped 2-D indicator arrays, got {y_true.shape} and {y_pred.shape}")
    return y_true, y_pred


def _multilabel(y: np.ndarray) -> np.ndarray:
    """``y`` as scikit-learn's multilabel-indicator type whatever its width: a one-column matrix gets an
    all-zero column appended (never selected, so it adds nothing to any count)."""
    return np.pad(y, ((0, 0), (0, 1))) if y.shape[1] < 2 else y


def confusion(y_true, y_pred) -> np.ndarray:
    """``[n_labels, 2, 2]``: ``[[tn, fp], [fn, tp]]`` of every column."""
    y_true, y_pred = _arrays(y_true, y_pred)
    labels = list(range(y_true.shape[1]))
    if not labels:
        return np.zeros((0, 2, 2), dtype=int)
    return multilabel_confusion_matrix(_multilabel(y_true), _multilabel(y_pred), labels=labels)


def _names(labels: Sequence[str] | None, width: int) -> list[str]:
    names = list(labels) if labels is not None else [str(i) for i in range(width)]
    if len(names) != width:
        raise ValueError(f"{len(names)} label names for {width} indicator columns")
    return names


def _label_ids(labels: Sequence[str], exclude: Sequence[str]) -> list[int]:
    return [i for i, name in enumerate(labels) if name not in set(exclude)]


def prf(y_true, y_pred, average: str = "micro", labels: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> PRF:
    """Micro or macro precision/recall/F1 over the label columns, leaving out ``exclude`` (e.g. "其他")."""
    y_true, y_pred = _arrays(y_true, y_pred)
    ids = _label_ids(_names(labels, y_true.shape[1]), exclude)
    if not ids:
        return PRF(0.0, 0.0, 0.0, 0)
    p, r, f, _ = precision_recall_fscore_support(
        _multilabel(y_true), _multilabel(y_pred), labels=ids, average=average, zero_division=0
    )
    return PRF(float(p), float(r), float(f), int(y_true[:, ids].sum()))


def per_label(y_true, y_pred, labels: Sequence[str]) -> list[LabelRow]:
    y_true, y_pred = _arrays(y_true, y_pred)
    labels = _names(labels, y_true.shape[1])
    if not labels:
        return []
    ids = list(range(len(labels)))
    p, r, f, _ = precision_recall_fscore_support(
        _multilabel(y_true), _multilabel(y_pred), labels=ids, average=None, zero_division=0
    )
    mcm = confusion(y_true, y_pred)
    return [
        LabelRow(name, float(p[i]), float(r[i]), float(f[i]), int(mcm[i, 1, 1]), int(mcm[i, :, 1].sum()), int(mcm[i, 1, :].sum()))
        for i, name in enumerate(labels)
    ]


def neuralclassifier_line(y_true, y_pred, labels: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> str:
    """``precision: P, recall: R, fscore: F, right: N, predict: N, standard: N`` (micro over labels)."""
    y_true, y_pred = _arrays(y_true, y_pred)
    ids = _label_ids(_names(labels, y_true.shape[1]), exclude)
    mcm = confusion(y_true, y_pred)[ids]
    right, predict, standard = int(mcm[:, 1, 1].sum()), int(mcm[:, :, 1].sum()), int(mcm[:, 1, :].sum())
    m = prf(y_true, y_pred, "micro", labels, exclude)
    return (
        f"precision: {m.precision:.6f}, recall: {m.recall:.6f}, fscore: {m.f1:.6f}, "
        f"right: {right}, predict: {predict}, standard: {standard}"
    )


def report(y_true, y_pred, labels: Sequence[str], exclude: Sequence[str] = ()) -> dict:
    """``{"micro": PRF, "macro": PRF, "per_label": [LabelRow], "line": str}``."""
    return {
        "micro": prf(y_true, y_pred, "micro", labels, exclude),
        "macro": prf(y_true, y_pred, "macro", labels, exclude),
        "per_label": per_label(y_true, y_pred, labels),
        "line": neuralclassifier_line(y_true, y_pred, labels, exclude),
    }


def markdown_table(rows: Sequence[LabelRow]) -> str:
    head = "| label | precision | recall | F1 | right | predict | standard |\n|---|---:|---:|---:|---:|---:|---:|\n"
    return head + "".join(
        f"| {r.label} | {r.precision:.4f} | {r.recall:.4f} | {r.f1:.4f} | {r.right} | {r.predict} | {r.standard} |\n" for r in rows
    )
