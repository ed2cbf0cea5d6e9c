"""Deterministic train/val/test splits: random, stratified by label, or group-wise (groups never straddle)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from common.errors import ConfigError


def _check(fractions: Sequence[float]) -> None:
    if not fractions or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"data.split: fractions must be positive and sum to 1, got {list(fractions)}")


def random_split(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Index arrays, one per fraction, covering ``range(n)`` exactly once."""
    _check(fractions)
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.round(np.cumsum(fractions)[:-1] * n).astype(int)
    return [np.sort(part) for part in np.split(order, bounds)]


def _successive(n: int, fractions: Sequence[float], take) -> list[np.ndarray]:
    """Cut parts one after another from what is left; ``take(rest, share)`` returns (taken, kept)."""
    _check(fractions)
    parts, rest, remaining = [], np.arange(n), 1.0
    for frac in fractions[:-1]:
        try:
            taken, rest = take(rest, frac / remaining)
        except ValueError:  # scikit-learn refuses an empty part
            raise ConfigError(f"data.split: {n} records are too few to split into {list(fractions)} (a part would be empty)") from None
        parts.append(np.sort(taken))
        remaining -= frac
    parts.append(np.sort(rest))
    return parts


def stratified_split(labels: Sequence, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Like :func:`random_split` but each part keeps the label proportions (scikit-learn's stratify).

    Labels with a single record left are pooled into one stratum (one rare label no longer turns the whole
    split random); when even that cannot be stratified, the part is cut at random.
    """
    labels = np.asarray([str(x) for x in labels])

    def take(rest, share):
        sub = labels[rest].copy()
        values, inverse, counts = np.unique(sub, return_inverse=True, return_counts=True)
        sub[counts[inverse] < 2] = "\0rare"
        values, counts = np.unique(sub, return_counts=True)
        strat = sub if counts.min() >= 2 and len(values) <= min(share, 1 - share) * len(sub) else None
        return train_test_split(rest, train_size=share, random_state=seed, stratify=strat)

    return _successive(len(labels), fractions, take)


def group_split(groups: Sequence, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Parts whose groups are disjoint (e.g. by ``label_group``); sizes follow the fractions in groups."""
    groups = np.asarray([str(g) for g in groups])

    def take(rest, share):
        gss = GroupShuffleSplit(n_splits=1, train_size=share, random_state=seed)
        taken, kept = next(gss.split(rest, groups=groups[rest]))
        return rest[taken], rest[kept]

    return _successive(len(groups), fractions, take)
