"""From probabilities to labels: global / per-label thresholds, top-k, and hierarchy consistency."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.metrics.thresholds import f1_at, pick

GRID = np.round(np.arange(0.02, 0.99, 0.02), 2)


def enforce_hierarchy(pred: np.ndarray, parents: Sequence[int]) -> np.ndarray:
    """A child is kept only where its parent is predicted (parents come before children in the columns)."""
    pred = pred.copy()
    for j, p in enumerate(parents):
        if p >= 0:
            pred[:, j] &= pred[:, p]
    return pred


def decode(
    probs: np.ndarray,
    task: str,
    thresholds: float | Sequence[float] | np.ndarray = 0.5,
    top_k: int = 0,
    parents: Sequence[int] | None = None,
) -> np.ndarray:
    """0/1 predictions ``[n, L]``.

    multiclass: the arg-max class. Otherwise a label is on when its probability reaches its threshold; with
    ``top_k`` only the k most probable labels of a row may be on (in a hierarchy: k sub-tags per parent level);
    hierarchical: sub-tags are decoded only under a positive parent (the gate decides).
    """
    probs = np.asarray(probs, dtype=np.float64)
    n, n_labels = probs.shape
    if task == "multiclass":
        out = np.zeros((n, n_labels), dtype=int)
        out[np.arange(n), probs.argmax(1)] = 1
        return out
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (n_labels,))
    pred = probs >= thr[None, :]
    if top_k and top_k > 0:
        parents = list(parents) if parents is not None else [-1] * n_labels
        for level in set(parents):
            cols = [j for j, p in enumerate(parents) if p == level]
            if len(cols) > top_k:
                sub = probs[:, cols]
                keep = np.zeros_like(sub, dtype=bool)
                keep[np.arange(n)[:, None], np.argsort(-sub, axis=1)[:, :top_k]] = True
                pred[:, cols] &= keep
    if task == "hierarchical" and parents is not None:
        pred = enforce_hierarchy(pred, parents)
    return pred.astype(int)


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, default: float = 0.5, grid: np.ndarray = GRID) -> np.ndarray:
    """Per-label threshold maximising that label's F1 on validation data.

    Labels without a positive in ``targets`` keep ``default``. Among equally good thresholds the middle one
    is taken (:func:`common.metrics.thresholds.pick`).
    """
    probs, targets = np.asarray(probs), np.asarray(targets).astype(int)
    out = np.full(probs.shape[1], default, dtype=np.float64)
    for j in range(probs.shape[1]):
        if targets[:, j].sum() == 0:
            continue
        t, f1 = pick(grid, f1_at(probs[:, j], targets[:, j], grid))
        if f1 > 0:
            out[j] = t
    return out
