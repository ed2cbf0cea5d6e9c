"""Readers (Shopee CSV, query/gallery JSONL, DeepMatcher tables, FlagEmbedding JSONL) and the DataModule.

Everything becomes a :class:`Catalog`: items with an id, a title, an optional image and a ``group`` (two
items match when their groups are equal). A :class:`Split` says which items are queries, which are the
gallery they are ranked against, and which form the pool scored with the Shopee F1 (all-vs-all, self
included). Shopee-style data: queries = gallery = pool = the split's postings. DeepMatcher tables:
queries = tableA records of the split's match groups, gallery = all of tableB, pool = both sides of the
split's match groups.
"""

from __future__ import annotations

import logging
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common.data.fingerprint import fingerprint
from common.data.images import load_image
from common.data.records import check_utf8, read_csv, read_jsonl, require_text
from common.data.splits import group_split
from common.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SHOPEE_COLUMNS = ("posting_id", "image", "image_phash", "title", "label_group")


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


# ---------------------------------------------------------------- readers
def read_shopee(path: str | Path, image_dir: str | Path | None = None, on_bad_record: str = "error",
                check_images: bool = True) -> Catalog:
    """Shopee ``posting_id,image,image_phash,title,label_group``; unknown columns, duplicate ids, empty titles
    and missing images are ``file:line:`` errors."""
    path = Path(path)
    image_dir = Path(image_dir) if image_dir else path.parent / "images"
    seen: dict[str, int] = {}
    counter = iter(range(2, 10**12))

    def validate(row: dict) -> tuple:
        line = next(counter)
        pid = require_text(row["posting_id"], "posting_id")
        if pid in seen:
            raise ValueError(f"duplicate posting_id {pid!r} (first seen on line {seen[pid]})")
        title = require_text(row["title"], "title")
        group = require_text(row["label_group"], "label_group")
        img = require_text(row["image"], "image")
        full = image_dir / img
        if check_images and not full.is_file():
            raise ValueError(f"missing image {full}")
        seen[pid] = line
        return pid, title, group, str(full)

    rows = read_csv(path, required=SHOPEE_COLUMNS, validate=validate, on_bad_record=on_bad_record,
                    allowed=SHOPEE_COLUMNS)
    ids, titles, groups, images = (list(x) for x in zip(*rows, strict=True))
    return Catalog(ids, titles, groups, images)


def _record_text(row: dict, fields: list[str] | None) -> str:
    keys = fields or [k for k in row if k not in ("id",)][:1]
    return " ".join(str(row.get(k) or "").strip() for k in keys).strip()


def _table(path: Path, fields: list[str] | None, on_bad_record: str) -> dict[str, dict]:
    def validate(row: dict) -> dict:
        require_text(row.get("id"), "id")
        if fields:
            missing = [f for f in fields if f not in row]
            if missing:
                raise ValueError(f"missing field(s) {missing}")
        return row

    out: dict[str, dict] = {}
    for row in read_csv(path, required=["id"], validate=validate, on_bad_record=on_bad_record):
        out[row["id"].strip()] = row
    return out


def text_field(folder: Path) -> list[str]:
    """The title-like column of a DeepMatcher table: ``name`` (Abt-Buy) or ``title`` (Walmart-Amazon, …)."""
    import csv

    with (folder / "tableA.csv").open(encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f))
    for cand in ("name", "title"):
        if cand in header:
            return [cand]
    return [h for h in header if h != "id"][:1]


def _known_ids(a: str, b: str, known: tuple[set, set] | None) -> tuple[str, str]:
    if known is not None:
        for side, rid, ids in (("tableA", a, known[0]), ("tableB", b, known[1])):
            if rid not in ids:
                raise ValueError(f"{side}_id {rid!r} is not in {side}.csv")
    return a, b


def read_matches(folder: Path, on_bad_record: str = "error", known: tuple[set, set] | None = None) -> list[tuple[str, str]]:
    """Matched ``(tableA_id, tableB_id)``: ``matches.csv``, else the label-1 rows of the labelled pair files.

    With ``known`` (the ids of tableA and tableB) a pair naming another id is a ``file:line`` error."""
    f = folder / "matches.csv"
    if f.exists():
        rows = read_csv(f, required=["tableA_id", "tableB_id"], on_bad_record=on_bad_record,
                        validate=lambda r: _known_ids(require_text(r["tableA_id"], "tableA_id"), require_text(r["tableB_id"], "tableB_id"), known))
        return rows
    pairs = []
    for name in ("train.csv", "valid.csv", "test.csv"):
        if (folder / name).exists():
            pairs += [(a, b) for a, b, y in read_pairs(folder / name, on_bad_record, known) if y == 1]
    if not pairs:
        raise DataError(f"{folder}: no matches.csv and no labelled train/valid/test.csv pairs")
    return pairs


def read_pairs(path: Path, on_bad_record: str = "error", known: tuple[set, set] | None = None) -> list[tuple[str, str, int]]:
    """Labelled pairs ``tableA_id|ltable_id, tableB_id|rtable_id, label`` (ids checked against ``known``)."""
    import csv

    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    with check_utf8(path).open(encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f), [])
    a = "tableA_id" if "tableA_id" in header else "ltable_id"
    b = "tableB_id" if "tableB_id" in header else "rtable_id"

    def validate(r):
        y = r["label"].strip()
        if y not in ("0", "1"):
            raise ValueError(f"label must be 0 or 1, got {y!r}")
        return (*_known_ids(require_text(r[a], a), require_text(r[b], b), known), int(y))

    return read_csv(path, required=[a, b, "label"], validate=validate, on_bad_record=on_bad_record)


def read_deepmatcher(folder: str | Path, fields: list[str] | None = None, on_bad_record: str = "error") -> Catalog:
    """``tableA.csv``, ``tableB.csv`` and matches as a catalog; ids ``a:<id>`` / ``b:<id>``; each match is a
    group (connected components when a record matches several), unmatched records are singletons."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such DeepMatcher folder (expected tableA.csv, tableB.csv, matches.csv)")
    for table in ("tableA.csv", "tableB.csv"):
        if not (folder / table).is_file():
            raise DataError(f"{folder / table}: no such file (a DeepMatcher folder holds tableA.csv, tableB.csv and matches)")
        check_utf8(folder / table)  # text_field reads tableA's header through a decoder that reads ahead
    fields = fields or text_field(folder)
    ta = _table(folder / "tableA.csv", fields, on_bad_record)
    tb = _table(folder / "tableB.csv", fields, on_bad_record)
    parent: dict[str, str] = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for a, b in read_matches(folder, on_bad_record, (set(ta), set(tb))):
        ra, rb = find(f"a:{a}"), find(f"b:{b}")
        if ra != rb:
            parent[ra] = rb
    ids, titles, groups, side = [], [], [], []
    for s, table in (("a", ta), ("b", tb)):
        for rid, row in table.items():
            pid = f"{s}:{rid}"
            ids.append(pid)
            titles.append(_record_text(row, fields) or "(empty)")
            groups.append(find(pid))
            side.append(s)
    return Catalog(ids, titles, groups, [None] * len(ids), side)


def read_query_gallery(queries: str | Path, gallery: str | Path, on_bad_record: str = "error") -> tuple[Catalog, Split]:
    """Query/gallery JSONL: ``{id, title, image?, group}`` per line in each file."""

    def val(r):
        return (require_text(str(r["id"]), "id"), require_text(r.get("title"), "title"),
                require_text(str(r["group"]), "group"), r.get("image"))

    q = read_jsonl(queries, val, on_bad_record)
    g = read_jsonl(gallery, val, on_bad_record)
    rows = [(f"q:{a}", b, c, d) for a, b, c, d in q] + [(f"g:{a}", b, c, d) for a, b, c, d in g]
    ids, titles, groups, images = (list(x) for x in zip(*rows, strict=True))
    cat = Catalog(ids, titles, groups, images, ["a"] * len(q) + ["b"] * len(g))
    qi, gi = np.arange(len(q)), np.arange(len(q), len(rows))
    return cat, Split(qi, gi, np.arange(len(rows)))


def read_flag_jsonl(path: str | Path, on_bad_record: str = "error") -> list[dict]:
    """FlagEmbedding training JSONL ``{query: str, pos: [str], neg: [str]}``."""

    def val(r):
        q = require_text(r.get("query"), "query")
        pos, neg = r.get("pos"), r.get("neg", [])
        if not isinstance(pos, list) or not pos or not all(isinstance(p, str) and p.strip() for p in pos):
            raise ValueError("field 'pos' must be a non-empty list of non-empty strings")
        if not isinstance(neg, list) or not all(isinstance(p, str) for p in neg):
            raise ValueError("field 'neg' must be a list of strings")
        return {"query": q, "pos": pos, "neg": neg}

    return read_jsonl(path, val, on_bad_record)


def ditto_fields(text: str) -> dict[str, str]:
    """``COL name VAL x COL price VAL y`` (Ditto's serialisation) -> ``{name: x, price: y}``."""
    out = {}
    for m in re.finditer(r"COL (\S+) VAL ?(.*?)(?= COL \S+ VAL\b|$)", text.strip()):
        out[m.group(1)] = m.group(2).strip()
    return out


def read_ditto(path: str | Path) -> list[tuple[str, str, int]]:
    """Ditto/DeepMatcher split lines ``left<TAB>right<TAB>label`` as serialised texts."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    out = []
    for lineno, line in enumerate(check_utf8(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or parts[2].strip() not in ("0", "1"):
            raise DataError(f"{path}:{lineno}: expected 'left<TAB>right<TAB>0|1'")
        out.append((parts[0], parts[1], int(parts[2])))
    return out


# ---------------------------------------------------------------- splits
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


# ---------------------------------------------------------------- datasets
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
    """

    def __init__(self, cat: Catalog, split: Split, loader: ItemLoader, num_negatives: int, seed: int,
                 negatives: dict[int, list[int]] | None = None, family: dict[str, str] | None = None):
        self.cat, self.loader, self.n_neg, self.seed = cat, loader, num_negatives, seed
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


class UniqueGroupBatchSampler(torch.utils.data.BatchSampler):
    """Shuffled batches of anchors whose groups are all different (no false negatives in the batch).

    Under DDP Lightning passes a ``DistributedSampler`` as ``sampler`` (only its rank and world size are
    used): every rank draws the same global batches of ``batch_size * world`` anchors and takes every
    world-th one, so one step sees exactly the batch one process would see with the global batch size
    (a last batch is cut to a multiple of the world size so all ranks step together with equal shapes).
    ``len()`` is the number of batches the next ``iter()`` yields (it depends on that epoch's shuffle).
    """

    def __init__(self, anchors: list[int], groups: list[str], batch_size: int, seed: int, sampler=None):
        self.anchors, self.groups, self.batch_size, self.seed, self.epoch = anchors, groups, batch_size, seed, 0
        self.sampler, self.drop_last = sampler, False
        self.rank, self.world = getattr(sampler, "rank", 0), getattr(sampler, "num_replicas", 1)
        self.bs = batch_size * self.world

    def __iter__(self):
        batches = self._rank_batches(self.epoch)
        self.epoch += 1
        return iter(batches)

    def __len__(self):
        # How many batches depends on the epoch's shuffle (a short last batch; anchors of a group already in
        # the batch wait for the next one and the last of them are dropped), so count the coming epoch's.
        return len(self._rank_batches(self.epoch))

    def _rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch`` (a pure function of seed and epoch: len() and iter() agree)."""
        w = self.world
        cut = (b[: len(b) - len(b) % w] for b in self._global_batches(epoch))
        return [b[self.rank :: w] for b in cut if b]

    def _global_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed + epoch)
        order = list(range(len(self.anchors)))
        rng.shuffle(order)
        batches, cur, used, rest = [], [], set(), []
        for k in order:
            g = self.groups[self.anchors[k]]
            (rest if g in used else cur).append(k)
            if g not in used:
                used.add(g)
            if len(cur) == self.bs:
                batches.append(cur)
                cur, used = [], set()
                pending, rest = rest, []
                for r in pending:
                    gr = self.groups[self.anchors[r]]
                    if gr in used:
                        rest.append(r)
                    else:
                        cur.append(r)
                        used.add(gr)
        if len(cur) > 1:
            batches.append(cur)
        return batches


# ---------------------------------------------------------------- datamodule
@dataclass
class SynthConfig:
    n_groups: int = 400
    min_per_group: int = 2
    max_per_group: int = 4
    image_size: int = 64
    seed: int = 0


@dataclass
class DataConfig:
    """The ``data`` node (checked at start-up)."""

    kind: str = "synthetic"  # synthetic | shopee | deepmatcher | query_gallery
    path: str | None = None  # shopee CSV, DeepMatcher folder, or query JSONL
    gallery: str | None = None  # query_gallery: gallery JSONL
    image_dir: str | None = None
    fields: list[str] | None = None  # DeepMatcher text columns (default: name/title)
    synth: SynthConfig = field(default_factory=SynthConfig)
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    batch_size: int = 32
    num_negatives: int = 1
    negatives_file: str | None = None  # mined FlagEmbedding JSONL (see retrieval.mine)
    num_workers: int = 0
    on_bad_record: str = "error"
    seed: int = 0
    cache_dir: str = ".cache"


def load_catalog(cfg: DataConfig) -> tuple[Catalog, dict[str, str] | None]:
    if cfg.kind == "synthetic":
        from retrieval import synth

        csv_path = synth.ensure(cfg.cache_dir, n_groups=cfg.synth.n_groups, min_per_group=cfg.synth.min_per_group,
                                max_per_group=cfg.synth.max_per_group, image_size=cfg.synth.image_size,
                                seed=cfg.synth.seed)
        return read_shopee(csv_path, on_bad_record=cfg.on_bad_record), synth.brand_of(csv_path.parent / "products_meta.jsonl")
    if cfg.kind not in ("shopee", "deepmatcher", "query_gallery"):
        raise ConfigError(f"data.kind: expected synthetic|shopee|deepmatcher|query_gallery, got {cfg.kind!r}")
    if not cfg.path:
        raise ConfigError(f"data.path: required for data.kind={cfg.kind}")
    if cfg.kind == "shopee":
        return read_shopee(cfg.path, cfg.image_dir, cfg.on_bad_record), None
    if cfg.kind == "query_gallery":
        if not cfg.gallery:
            raise ConfigError("data.gallery: required for data.kind=query_gallery (the gallery JSONL)")
        # queries are side "a", gallery side "b": the DeepMatcher splits (group-wise queries vs the whole
        # gallery) and all_split (every query with a match vs the gallery) apply unchanged
        return read_query_gallery(cfg.path, cfg.gallery, cfg.on_bad_record)[0], None
    return read_deepmatcher(cfg.path, list(cfg.fields) if cfg.fields else None, cfg.on_bad_record), None


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
        self.catalog, family = load_catalog(cfg)
        self.splits = make_splits(self.catalog, list(cfg.split), cfg.seed)
        negatives = negatives_from_file(cfg.negatives_file, self.catalog) if cfg.negatives_file else None
        train_groups = sorted({self.catalog.groups[i] for i in self.splits["train"].pool})
        self.labels = {g: k for k, g in enumerate(train_groups)}  # ArcFace classes
        self.train_set = PairDataset(self.catalog, self.splits["train"], ItemLoader(self.catalog, self.train_tf, self.labels),
                                     cfg.num_negatives, cfg.seed, negatives, family)
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
