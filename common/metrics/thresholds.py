"""Threshold search, once for every package: the F1 of ``score >= t`` at many ``t`` and the one to keep.

:func:`f1_at` counts true/false positives for all candidate thresholds in one sort (``O(n log n + T)``)
instead of one scikit-learn call per threshold; :func:`pick` is the single tie-break: among equally good
thresholds the middle of the best plateau (its centre generalises better than either edge).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def f1_at(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray,
          thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    """F1 of the positive class when ``score >= t`` is predicted positive, for every ``t`` (0 where undefined)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # Items with score >= t are those from searchsorted(t, "left") on: positives among them by a suffix sum.
    pos_suffix = np.concatenate([np.cumsum(y_sorted[::-1])[::-1], [0]])
    first = np.searchsorted(s_sorted, t, side="left")
    predicted = len(s) - first
    tp = pos_suffix[first]
    denom = predicted + y.sum()  # 2 tp + fp + fn = predicted + actual
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def pick(thresholds: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """``(threshold, value)`` with the highest value; ties: the middle of the best thresholds in ascending order."""
    t = np.asarray(thresholds, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if not len(t):
        raise ValueError("pick: no thresholds")
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    best = np.flatnonzero(v >= v.max() - 1e-12)
    i = best[len(best) // 2]
    return float(t[i]), float(v[i])


def best_f1_threshold(scores, labels, thresholds) -> tuple[float, float]:
    """The threshold of :func:`pick` over :func:`f1_at`: ``(threshold, f1)``."""
    return pick(thresholds, f1_at(scores, labels, thresholds))
