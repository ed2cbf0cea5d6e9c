"""The ``data`` node at work: :func:`load_catalog` (synthetic, Shopee, DeepMatcher, query/gallery, FlagEmbedding
JSONL) and the Lightning DataModule of training."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
from torch.utils.data import DataLoader

from common.data.fingerprint import fingerprint
from common.errors import ConfigError, DataError
from retrieval import synth
from retrieval.data.catalog import Catalog, Split
from retrieval.data.datasets import ItemDataset, ItemLoader, PairDataset, collate_items, collate_pairs
from retrieval.data.flag import FlagFile, read_flag_catalog
from retrieval.data.readers import read_deepmatcher, read_flag_jsonl, read_query_gallery, read_shopee
from retrieval.data.samplers import UniqueGroupBatchSampler
from retrieval.data.splits import make_splits
from retrieval.schemas import DataConfig

SOURCES = ("synthetic", "shopee", "deepmatcher", "query_gallery", "flag_jsonl")


def flag_file(cfg: DataConfig) -> FlagFile:
    return read_flag_catalog(cfg.path, cfg.query_prompt, cfg.passage_prompt, cfg.on_bad_record)


def load_catalog(cfg: DataConfig) -> tuple[Catalog, dict[str, str] | None]:
    if cfg.source == "synthetic":
        csv_path = synth.ensure(cfg.cache_dir, n_groups=cfg.synth.n_groups, min_per_group=cfg.synth.min_per_group,
                                max_per_group=cfg.synth.max_per_group, image_size=cfg.synth.image_size,
                                seed=cfg.synth.seed)
        return read_shopee(csv_path, on_bad_record=cfg.on_bad_record), synth.brand_of(csv_path.parent / "products_meta.jsonl")
    if cfg.source not in SOURCES:
        raise ConfigError(f"data.source: expected {'|'.join(SOURCES)}, got {cfg.source!r}")
    if not cfg.path:
        raise ConfigError(f"data.path: required for data.source={cfg.source}")
    if cfg.source == "shopee":
        return read_shopee(cfg.path, cfg.image_dir, cfg.on_bad_record), None
    if cfg.source == "query_gallery":
        if not cfg.gallery:
            raise ConfigError("data.gallery: required for data.source=query_gallery (the gallery JSONL)")
        # queries are side "a", gallery side "b": the DeepMatcher splits (group-wise queries vs the whole
        # gallery) and all_split (every query with a match vs the gallery) apply unchanged
        return read_query_gallery(cfg.path, cfg.gallery, cfg.on_bad_record, cfg.fields_map)[0], None
    if cfg.source == "flag_jsonl":  # queries side "a", the file's passages side "b", as for query/gallery
        return flag_file(cfg).catalog, None
    return read_deepmatcher(cfg.path, list(cfg.fields) if cfg.fields else None, cfg.on_bad_record, cfg.image_dir), None


def negatives_from_file(path: str | Path, cat: Catalog) -> dict[int, list[int]]:
    """Mined FlagEmbedding JSONL -> anchor index -> negative indices (texts mapped back to items)."""
    by_title = defaultdict(list)
    for i, t in enumerate(cat.titles):
        by_title[t].append(i)
    out: dict[int, list[int]] = {}
    for r in read_flag_jsonl(path):
        for a in by_title.get(r["query"], []):
            out.setdefault(a, []).extend(j for n in r["neg"] for j in by_title.get(n, [])[:1])
    return out


class RetrievalDataModule(pl.LightningDataModule):
    def __init__(self, cfg: DataConfig, image_transforms: tuple | None = None):
        super().__init__()
        self.cfg = cfg
        self.train_tf, self.eval_tf = image_transforms or (None, None)
        positives, n_neg = None, cfg.num_negatives
        if cfg.train_group_size is not None:
            if cfg.train_group_size < 1:
                raise ConfigError(f"data.train_group_size: expected >= 1 (1 positive + n-1 negatives), got {cfg.train_group_size}")
            n_neg = cfg.train_group_size - 1
        if cfg.source == "flag_jsonl":
            if not cfg.path:
                raise ConfigError("data.path: required for data.source=flag_jsonl")
            if cfg.negatives_file:
                raise ConfigError("data.negatives_file: a FlagEmbedding file brings its own negatives (its 'neg' lists)")
            flag = flag_file(cfg)
            self.catalog, family, positives, negatives = flag.catalog, None, flag.positives, flag.negatives
        else:
            self.catalog, family = load_catalog(cfg)
            negatives = negatives_from_file(cfg.negatives_file, self.catalog) if cfg.negatives_file else None
        self.splits = make_splits(self.catalog, list(cfg.split), cfg.seed)
        train_groups = sorted({self.catalog.groups[i] for i in self.splits["train"].pool})
        self.labels = {g: k for k, g in enumerate(train_groups)}  # ArcFace classes
        self.train_set = PairDataset(self.catalog, self.splits["train"], ItemLoader(self.catalog, self.train_tf, self.labels),
                                     n_neg, cfg.seed, negatives, family, positives, replace=positives is not None)
        if not self.train_set.anchors:
            raise DataError("data: the training split has no group with two or more items")
        self.fingerprint = fingerprint(zip(self.catalog.ids, self.catalog.titles, self.catalog.groups, strict=True))

    def train_dataloader(self):
        sampler = UniqueGroupBatchSampler(self.train_set.anchors, self.catalog.groups, self.cfg.batch_size, self.cfg.seed)
        self.train_set.epoch += 1
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=collate_pairs,
                          num_workers=self.cfg.num_workers, persistent_workers=self.cfg.num_workers > 0)

    def eval_loader(self, split: Split | str, batch_size: int = 128) -> DataLoader:
        split = self.splits[split] if isinstance(split, str) else split
        idx = np.unique(np.concatenate([split.queries, split.gallery, split.pool]))
        return DataLoader(ItemDataset(idx, ItemLoader(self.catalog, self.eval_tf)), batch_size=batch_size,
                          collate_fn=collate_items, num_workers=self.cfg.num_workers)

    def val_dataloader(self):
        return self.eval_loader("val")

    def test_dataloader(self):
        return self.eval_loader("test")
