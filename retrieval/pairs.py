"""Ditto-style pair text (Li et al. 2020, "Deep Entity Matching with Pre-Trained Language Models").

* :func:`serialise_record`: every attribute of a record as ``COL name VAL ... COL price VAL ...`` (empty values
  keep their ``COL x VAL`` marker, as Ditto's files do).
* :class:`Summariser`: a long record keeps its most informative tokens (highest TF-IDF over every record of
  the data set, stop words never) in their original order, and every ``COL`` / ``VAL`` marker and attribute
  name, so the pair fits the cross-encoder's ``max_length``. Ditto's ``summarize`` option.
* :class:`Augmenter`: Ditto's data augmentation operators on a serialised pair (``span_del``, ``span_shuffle``,
  ``attr_del``, ``attr_shuffle``, ``entry_swap``), applied to training pairs only.
* :func:`inject_codes`: product-code knowledge in the text, the product half of Ditto's domain-knowledge
  injection: each attribute value gets the separator-free form of its codes (``nn4-ts-blk`` -> ``nn4tsblk``), so
  the two sites' spellings of one model number meet as one token sequence.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from common.errors import ConfigError, DataError
from retrieval.normalise import expand_codes

OPS = ("span_del", "span_shuffle", "attr_del", "attr_shuffle", "entry_swap")
_ATTR = re.compile(r"COL (.*?) VAL(.*?)(?= COL |$)", re.S)


def serialise_record(record: Mapping[str, object], fields: Iterable[str] | None = None) -> str:
    """``COL k VAL v`` for each attribute (``fields``: these, in this order; default all but ``id``)."""
    keys = list(fields) if fields else [k for k in record if k != "id"]
    parts = []
    for k in keys:
        v = record.get(k)
        v = "" if v is None or (isinstance(v, float) and math.isnan(v)) else " ".join(str(v).split())
        parts.append(f"COL {k} VAL {v}".rstrip())
    return " ".join(parts)


def attributes(text: str) -> list[tuple[str, str]]:
    """``[(name, value), ...]`` of a serialised record (a plain string: one attribute, ``text``)."""
    if not text.startswith("COL "):
        return [("text", text)]
    return [(m.group(1).strip(), m.group(2).strip()) for m in _ATTR.finditer(text)]


def inject_codes(text: str) -> str:
    """``text`` with every code-like value token (letters and digits joined by ``-`` ``/`` ``.``) followed by
    its separator-free form, attribute by attribute (the markers and names untouched)."""
    if not text.startswith("COL "):
        return expand_codes(text)
    return _join([(k, expand_codes(v)) for k, v in attributes(text)])


def _join(attrs: list[tuple[str, str]]) -> str:
    return " ".join(f"COL {k} VAL {v}".rstrip() for k, v in attrs)


class Summariser:
    """Keep each record to ``max_tokens``, dropping the lowest-TF-IDF value words first.

    Fitted on record texts of the data set (``fit``); the markers and attribute names always stay. ``cost(word)``
    is what a word spends of the budget: 1 (words), or its number of subword tokens (the cross-encoder's
    tokenizer), which keeps the pair inside the model's ``max_length``.
    """

    STOP = frozenset("a an and are as at be by for from in is it of on or the to with".split())

    def __init__(self, max_tokens: int, cost: Callable[[str], int] | None = None):
        if max_tokens < 8:
            raise ConfigError(f"model.reranker.summarise: expected at least 8 tokens a record, got {max_tokens}")
        self.max_tokens = max_tokens
        self.cost = cost or (lambda w: 1)
        self.idf: dict[str, float] = {}
        self.n_docs = 0

    def fit(self, texts: Iterable[str]) -> Summariser:
        df: Counter[str] = Counter()
        for t in texts:
            self.n_docs += 1
            df.update({w for _, v in attributes(t) for w in v.lower().split()})
        self.idf = {w: math.log((1 + self.n_docs) / (1 + c)) + 1.0 for w, c in df.items()}
        return self

    def __call__(self, text: str) -> str:
        attrs = attributes(text)
        cost = self.cost
        markers = sum(cost("COL") + cost("VAL") + sum(map(cost, k.split())) for k, _ in attrs) if text.startswith("COL ") else 0
        words = [(i, j, w) for i, (_, v) in enumerate(attrs) for j, w in enumerate(v.split())]
        costs = [cost(w) for _, _, w in words]
        budget = self.max_tokens - markers
        if sum(costs) <= budget:
            return text
        tf = Counter(w.lower() for _, _, w in words)
        unseen = math.log(1 + self.n_docs) + 1.0

        def weight(w: str) -> float:
            lw = w.lower()
            return -1.0 if lw in self.STOP else tf[lw] * self.idf.get(lw, unseen)

        # the highest weights win; among equals the earlier token (titles come first in Ditto's files)
        ranked = sorted(range(len(words)), key=lambda n: (-weight(words[n][2]), n))
        keep, used = set(), 0
        for n in ranked:
            if used + costs[n] <= budget:
                keep.add(n)
                used += costs[n]
        values: list[list[str]] = [[] for _ in attrs]
        for n, (i, _, w) in enumerate(words):
            if n in keep:
                values[i].append(w)
        out = [(k, " ".join(vs)) for (k, _), vs in zip(attrs, values, strict=True)]
        return _join(out) if text.startswith("COL ") else out[0][1]


class Augmenter:
    """One of Ditto's operators on a training pair, drawn with probability ``p`` (else the pair unchanged)."""

    def __init__(self, ops: Iterable[str], p: float = 0.5, seed: int = 0):
        self.ops = list(ops)
        for op in self.ops:
            if op not in OPS:
                raise ConfigError(f"model.reranker.augment: unknown operator {op!r} (expected some of {', '.join(OPS)})")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"model.reranker.augment_p: expected a probability, got {p!r}")
        self.p = p
        self.rng = random.Random(seed)

    def __call__(self, left: str, right: str) -> tuple[str, str]:
        if not self.ops or self.rng.random() >= self.p:
            return left, right
        op = self.rng.choice(self.ops)
        if op == "entry_swap":
            return right, left
        side = self.rng.randrange(2)
        texts = [left, right]
        texts[side] = self._apply(op, texts[side])
        return texts[0], texts[1]

    def _apply(self, op: str, text: str) -> str:
        attrs = attributes(text)
        if op in ("attr_del", "attr_shuffle"):
            if len(attrs) < 2:
                return text
            attrs = list(attrs)
            if op == "attr_del":
                del attrs[self.rng.randrange(len(attrs))]
            else:
                self.rng.shuffle(attrs)
            return _join(attrs) if text.startswith("COL ") else attrs[0][1]
        # span operators: a span of up to 4 value tokens inside one attribute
        filled = [i for i, (_, v) in enumerate(attrs) if len(v.split()) >= 2]
        if not filled:
            return text
        i = self.rng.choice(filled)
        words = attrs[i][1].split()
        n = self.rng.randint(1, min(4, len(words) - 1))
        a = self.rng.randrange(len(words) - n + 1)
        if op == "span_del":
            words = words[:a] + words[a + n:]
        else:
            span = words[a : a + n]
            self.rng.shuffle(span)
            words = words[:a] + span + words[a + n:]
        attrs = [*attrs[:i], (attrs[i][0], " ".join(words)), *attrs[i + 1:]]
        return _join(attrs) if text.startswith("COL ") else attrs[0][1]


# ------------------------------------------------------------------------------------------ pair sources
SPLITS = ("train", "valid", "test")


def read_table_pairs(folder: str | Path, on_bad_record: str = "error", valid_fraction: float = 0.2,
                     seed: int = 0) -> dict[str, list[tuple[str, str, int]]]:
    """DeepMatcher tables + pair CSVs: ``tableA.csv`` / ``tableB.csv`` and ``train.csv`` / ``valid.csv`` /
    ``test.csv`` (``ltable_id, rtable_id, label`` or ``tableA_id, tableB_id, label``), each side serialised
    with every attribute. Without ``valid.csv`` a stratified ``valid_fraction`` of the training pairs (seeded)
    is the validation split, so the threshold is never tuned on test."""
    from sklearn.model_selection import train_test_split

    from retrieval.data.readers import _table, read_pairs

    folder = Path(folder)
    ta = _table(folder / "tableA.csv", None, on_bad_record)
    tb = _table(folder / "tableB.csv", None, on_bad_record)
    known = (set(ta), set(tb))

    def text(row: dict) -> str:
        return serialise_record(row, [k for k in row if k not in ("id", "image")])

    def load(name: str) -> list[tuple[str, str, int]]:
        return [(text(ta[a]), text(tb[b]), y) for a, b, y in read_pairs(folder / name, on_bad_record, known)]

    out = {"train": load("train.csv"), "test": load("test.csv")}
    if (folder / "valid.csv").is_file():
        out["valid"] = load("valid.csv")
    else:
        labels = [y for *_, y in out["train"]]
        train, valid = train_test_split(out["train"], test_size=valid_fraction, random_state=seed, stratify=labels)
        out["train"], out["valid"] = train, valid
    return out


def pair_source(folder: str | Path, source: str = "auto") -> str:
    """Which pair files a folder holds: ``ditto`` (``train/valid/test.txt``, directly or under
    ``ditto_deepmatcher_splits/``) or ``tables`` (DeepMatcher tables + ``train.csv`` / ``test.csv``)."""
    folder = Path(folder)
    ditto = folder / "ditto_deepmatcher_splits" if (folder / "ditto_deepmatcher_splits").is_dir() else folder
    has_ditto = all((ditto / f"{s}.txt").is_file() for s in SPLITS)
    has_tables = all((folder / f).is_file() for f in ("tableA.csv", "tableB.csv", "train.csv", "test.csv"))
    if source not in ("auto", "ditto", "tables"):
        raise ConfigError(f"model.reranker.pairs: expected auto|ditto|tables, got {source!r}")
    if source == "ditto" and not has_ditto:
        raise DataError(f"{ditto}: no train.txt / valid.txt / test.txt (Ditto's pair files)")
    if source == "tables" and not has_tables:
        raise DataError(f"{folder}: no tableA.csv / tableB.csv / train.csv / test.csv (DeepMatcher tables + pairs)")
    if source == "auto":
        if not (has_ditto or has_tables):
            raise DataError(f"{folder}: no pair files (expected Ditto's train/valid/test.txt, or DeepMatcher "
                            "tableA.csv, tableB.csv, train.csv, test.csv)")
        source = "ditto" if has_ditto else "tables"
    return source
