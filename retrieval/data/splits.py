"""Group-wise train/val/test splits of a catalog, and the whole-catalog split of ``retrieval.eval split=all``."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from common.data.splits import group_split
from common.errors import DataError
from retrieval.data.catalog import Catalog, Split


def make_splits(cat: Catalog, fractions, seed: int) -> dict[str, Split]:
    """Group-wise train/val/test: no group straddles two parts (``common.data.splits.group_split``)."""
    if any(cat.side):
        matched = defaultdict(set)
        for i, g in enumerate(cat.groups):
            matched[g].add(cat.side[i])
        groups = [g for g, s in matched.items() if s == {"a", "b"}]
        if len(groups) < 3:
            raise DataError("data: fewer than 3 groups with items on both sides (tableA/tableB or query/gallery), cannot split")
        parts = group_split(groups, fractions, seed)
        gallery = np.array([i for i, s in enumerate(cat.side) if s == "b"])
        out = {}
        for name, part in zip(("train", "val", "test"), parts, strict=True):
            gs = {groups[j] for j in part}
            q = np.array([i for i, g in enumerate(cat.groups) if g in gs and cat.side[i] == "a"])
            pool = np.array([i for i, g in enumerate(cat.groups) if g in gs])
            out[name] = Split(q, gallery, pool)
        return out
    parts = group_split(cat.groups, fractions, seed)
    return {n: Split(p, p, p) for n, p in zip(("train", "val", "test"), parts, strict=True)}


def all_split(cat: Catalog) -> Split:
    """Evaluate a whole catalog (an unseen folder): DeepMatcher -> A queries with a match vs all B."""
    if any(cat.side):
        groups_with_b = {cat.groups[i] for i, s in enumerate(cat.side) if s == "b"}
        q = np.array([i for i, s in enumerate(cat.side) if s == "a" and cat.groups[i] in groups_with_b])
        matched = {cat.groups[i] for i in q}
        pool = np.array([i for i, g in enumerate(cat.groups) if g in matched])
        return Split(q, np.array([i for i, s in enumerate(cat.side) if s == "b"]), pool)
    idx = np.arange(len(cat))
    return Split(idx, idx, idx)
