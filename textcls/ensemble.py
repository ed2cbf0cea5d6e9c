"""Combining the outputs of several taggers that share a label space: the one definition of every combination,
used by ``combine=`` of ``python -m textcls.eval|predict`` (:func:`textcls.inference.combine`) and by the
test-time ensemble of training (``module.ensemble_mode``).

* ``intersection`` — a label is on only where every model says so (precision; the team's BERT ∩ TextCNN);
* ``union`` — where any model says so (recall);
* ``mean`` — average probabilities and thresholds, then decode;
* ``two_stage`` — the first model is the main multi-label / hierarchical tagger, every further one a binary
  model for one (rare) label whose probability and threshold replace the main model's column for that label.

Hierarchical outputs are made consistent again after every combination (no sub-tag without its gate).

A "model" here is anything with ``space`` (a :class:`~textcls.data.LabelSpace`), ``thresholds`` (a tensor) and
``decode(probs, thresholds=None)`` — a :class:`~textcls.module.TextClassifier`; this module imports none.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.errors import ConfigError
from textcls import decoding

COMBINE = ("single", "intersection", "union", "mean", "two_stage")


def combine_outputs(main, probs: np.ndarray, thresholds: np.ndarray, others: Sequence[tuple[object, np.ndarray]],
                    mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``(probs, pred)`` of ``main`` (its ``probs`` decoded at ``thresholds``) combined by ``mode`` with
    ``others``, pairs ``(model, probs of the same docs)``."""
    if mode not in COMBINE:
        raise ConfigError(f"combine: expected one of {COMBINE}, got {mode!r}")
    space = main.space
    thr = np.array(thresholds, dtype=np.float64, copy=True)
    if mode == "single":
        return probs, main.decode(probs, thr)
    if mode == "two_stage":
        probs = probs.copy()
        for m, p in others:
            if m.space.task != "binary" or m.space.labels[0] not in space.index:
                raise ConfigError(f"ckpt: a two-stage member must be a binary model for one of {space.labels}")
            j = space.index[m.space.labels[0]]
            probs[:, j] = p[:, 0]
            thr[j] = float(m.thresholds[0])
        return probs, main.decode(probs, thr)
    for m, _ in others:
        if m.space.labels != space.labels or m.space.task != space.task:
            raise ConfigError("ckpt: ensemble members must share task and labels")
    mean = np.mean([probs] + [p for _, p in others], axis=0)
    if mode == "mean":
        mean_thr = np.mean([thr] + [m.thresholds.cpu().numpy() for m, _ in others], axis=0)
        return mean, main.decode(mean, mean_thr)
    preds = [main.decode(probs, thr)] + [m.decode(p) for m, p in others]
    pred = np.logical_and.reduce(preds) if mode == "intersection" else np.logical_or.reduce(preds)
    pred = pred.astype(int)
    if space.task == "hierarchical":
        pred = decoding.enforce_hierarchy(pred, space.parents)
    return mean, pred
