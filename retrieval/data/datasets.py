"""Torch datasets: catalog items as model inputs, and (anchor, positive, negatives) training triples."""

from __future__ import annotations

import random
from collections import defaultdict

import torch
from torch.utils.data import Dataset

from common.data.images import load_image
from common.errors import ConfigError
from retrieval.data.catalog import Catalog, Split


class ItemLoader:
    """Turns catalog indices into model inputs: titles and (when the model has an image tower) tensors."""

    def __init__(self, cat: Catalog, transform=None, labels: dict[str, int] | None = None):
        self.cat, self.transform, self.labels = cat, transform, labels or {}

    def __call__(self, i: int) -> dict:
        out = {"title": self.cat.titles[i], "idx": i, "label": self.labels.get(self.cat.groups[i], -1)}
        if self.transform is not None:
            path = self.cat.images[i]
            if path is None:
                raise ConfigError("model.image: the data has no images; use a text-only model")
            out["image"] = self.transform(load_image(path))
        return out


def collate_items(items: list[dict]) -> dict:
    out = {"title": [x["title"] for x in items], "idx": torch.tensor([x["idx"] for x in items]),
           "label": torch.tensor([x["label"] for x in items])}
    if "image" in items[0]:
        out["image"] = torch.stack([x["image"] for x in items])
    return out


class ItemDataset(Dataset):
    def __init__(self, indices, loader: ItemLoader):
        self.indices, self.loader = [int(i) for i in indices], loader

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        return self.loader(self.indices[k])


class PairDataset(Dataset):
    """(anchor, positive, negatives) triples; one per anchor of the training split.

    Anchors are items whose group has another member (for DeepMatcher: tableA records, positive from tableB).
    Negatives come from ``negatives`` (mined: anchor index -> candidate indices) or, without them, from
    items of the same "family" (same brand+type in the synthetic set) or at random.

    ``positives`` (anchor index -> its own positives) replaces "the other members of its group" (a FlagEmbedding
    record's ``pos``). ``replace`` is FlagEmbedding's ``train_group_size`` rule: an anchor with fewer mined
    negatives than ``num_negatives`` repeats them (sampled from the list repeated, so with replacement)
    rather than filling up at random; only an anchor with none gets random ones.
    """

    def __init__(self, cat: Catalog, split: Split, loader: ItemLoader, num_negatives: int, seed: int,
                 negatives: dict[int, list[int]] | None = None, family: dict[str, str] | None = None,
                 positives: dict[int, list[int]] | None = None, replace: bool = False):
        self.cat, self.loader, self.n_neg, self.seed = cat, loader, num_negatives, seed
        self.own_positives, self.replace = positives, replace
        members = defaultdict(list)
        for i in split.pool:
            members[cat.groups[i]].append(int(i))
        self.members = members
        cross = any(cat.side)
        self.anchors = [int(i) for i in split.pool
                        if len(members[cat.groups[i]]) > 1 and (not cross or cat.side[i] == "a")]
        self.candidates = [int(i) for i in (split.gallery if cross else split.pool)]
        self.negatives = negatives or {}
        self.family = defaultdict(list)
        if family:
            for i in self.candidates:
                self.family[family.get(cat.groups[i], "")].append(i)
        self.fam_of = family or {}
        self.epoch = 0

    def __len__(self):
        return len(self.anchors)

    def positives(self, a: int) -> list[int]:
        if self.own_positives is not None:
            return self.own_positives[a]
        others = [j for j in self.members[self.cat.groups[a]] if j != a]
        if any(self.cat.side):
            others = [j for j in others if self.cat.side[j] == "b"] or others
        return others

    def __getitem__(self, k):
        a = self.anchors[k]
        rng = random.Random(hash((self.seed, self.epoch, k)) & 0xFFFFFFFF)
        p = rng.choice(self.positives(a))
        group = self.cat.groups[a]
        pool = [j for j in self.negatives.get(a, []) if self.cat.groups[j] != group]
        if len(pool) < self.n_neg and self.fam_of:
            fam = [j for j in self.family[self.fam_of.get(group, "")] if self.cat.groups[j] != group]
            pool += rng.sample(fam, min(len(fam), self.n_neg))
        if self.replace and 0 < len(pool) < self.n_neg:
            pool = pool * -(-self.n_neg // len(pool))
        negs = rng.sample(pool, min(len(pool), self.n_neg))
        while len(negs) < self.n_neg:
            j = rng.choice(self.candidates)
            if self.cat.groups[j] != group:
                negs.append(j)
        items = [self.loader(a), self.loader(p), *[self.loader(j) for j in negs]]
        return items


def collate_pairs(batch: list[list[dict]]) -> dict:
    n = len(batch[0])
    anchors = collate_items([b[0] for b in batch])
    pos = collate_items([b[1] for b in batch])
    negs = collate_items([x for b in batch for x in b[2:]]) if n > 2 else None
    return {"anchor": anchors, "pos": pos, "neg": negs}
