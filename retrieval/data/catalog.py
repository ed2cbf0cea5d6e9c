"""The data model: a :class:`Catalog` of items (id, title, optional image, match ``group``) and a :class:`Split`
(queries, the gallery they are ranked against, and the pool scored with the Shopee F1)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Catalog:
    ids: list[str]
    titles: list[str]
    groups: list[str]
    images: list[str | None]
    side: list[str] = field(default_factory=list)  # "a"/"b" for DeepMatcher tables, "" otherwise

    def __post_init__(self):
        if not self.side:
            self.side = [""] * len(self.ids)
        self.index = {pid: i for i, pid in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_images(self) -> bool:
        return all(p is not None for p in self.images)


@dataclass
class Split:
    queries: np.ndarray
    gallery: np.ndarray
    pool: np.ndarray

    def relevant(self, cat: Catalog) -> list[set[int]]:
        """Per query, the positions in ``gallery`` of its matches (never itself)."""
        by_group = defaultdict(set)
        for pos, i in enumerate(self.gallery):
            by_group[cat.groups[i]].add(pos)
        gpos = {int(i): pos for pos, i in enumerate(self.gallery)}
        out = []
        for q in self.queries:
            rel = set(by_group.get(cat.groups[q], set()))
            rel.discard(gpos.get(int(q), -1))
            out.append(rel)
        return out
