"""Records, label spaces, datasets and the LightningDataModule.

Sources (``data.source``):

* ``synthetic`` — the embedded car-news set (:mod:`textcls.synth`), split 80/10/10 by seed;
* ``jsonl`` — NeuralClassifier JSONL: ``{"doc_token": [...] | "text": "...", "doc_label": ["新车资讯--预热", ...]}``
  with an optional taxonomy file;
* ``toutiao`` — the Toutiao ``id_!_code_!_name_!_headline_!_keywords`` format, read in place.

For both files sources, ``val_file`` / ``test_file`` (same format) are read as they are, and whatever part
has no file of its own is cut from ``train_file`` (stratified, ``split`` rescaled to those parts): train on
one file and test on another with ``data.test_file=...`` alone.

Tasks (``data.task``) decide how a record's labels become a target row:
``binary`` (one column: ``positive_label`` or any of its descendants present), ``multiclass`` (exactly one
label per record), ``multilabel`` (the listed labels) and ``hierarchical`` (the listed labels plus all
their ancestors, so the gate column is 1 whenever any sub-tag is).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common.data import samplers
from common.data.fingerprint import fingerprint
from common.data.records import BadRecords, check_on_bad_record, check_utf8, read_jsonl, require_text
from common.data.splits import random_split, stratified_split
from common.errors import ConfigError, DataError
from textcls.schemas import DataConfig, SynthConfig  # noqa: F401  (re-exported)
from textcls.synth import Doc, generate
from textcls.taxonomy import GATE, OTHER, Taxonomy, with_ancestors
from textcls.tokenize import HFEncoder, VocabEncoder

log = logging.getLogger(__name__)

TASKS = ("binary", "multiclass", "multilabel", "hierarchical")
SOURCES = ("synthetic", "jsonl", "toutiao")
SAMPLERS = ("none", "balanced", "rare", "oversample")
# The 15 Toutiao news classes: code -> name (codes 105 and 111 are unused in the published set).
TOUTIAO_CLASSES = {
    "100": "news_story", "101": "news_culture", "102": "news_entertainment", "103": "news_sports",
    "104": "news_finance", "106": "news_house", "107": "news_car", "108": "news_edu", "109": "news_tech",
    "110": "news_military", "112": "news_travel", "113": "news_world", "114": "stock",
    "115": "news_agriculture", "116": "news_game",
}


# ----------------------------------------------------------------------------------------------- records


def _jsonl_doc(taxonomy: Taxonomy | None, allowed: set[str] | None):
    def validate(rec: dict) -> Doc:
        if "doc_token" in rec:
            tokens = rec["doc_token"]
            if isinstance(tokens, list):
                if not all(isinstance(t, str) for t in tokens):
                    raise ValueError("field 'doc_token' must be a list of strings")
                text = require_text("".join(tokens) if all(len(t) == 1 for t in tokens) else " ".join(tokens), "doc_token")
            else:
                text = require_text(tokens, "doc_token")
        elif "text" in rec:
            text = require_text(rec["text"], "text")
        else:
            raise ValueError("missing field 'doc_token' or 'text'")
        labels = rec.get("doc_label", [])
        if isinstance(labels, str):
            labels = [labels]
        if not isinstance(labels, list):
            raise ValueError(f"field 'doc_label' must be a list of strings, got {type(labels).__name__}")
        bad = [label for label in labels if not isinstance(label, str) or not label.strip()]
        if bad:
            raise ValueError(f"field 'doc_label': label {bad[0]!r} must be a non-empty string")
        if taxonomy is not None:
            labels = taxonomy.check(labels)
        elif allowed is not None:
            for label in labels:
                if label not in allowed:
                    raise ValueError(f"label {label!r} is not a label of the training data")
        return Doc(text, tuple(labels))

    return validate


def read_docs(
    path: str | Path,
    taxonomy: Taxonomy | None = None,
    allowed: set[str] | None = None,
    on_bad_record: str = "error",
    bad: BadRecords | None = None,
) -> list[Doc]:
    """NeuralClassifier JSONL -> docs; every problem is ``file:line: reason`` (a :class:`DataError`)."""
    return read_jsonl(path, _jsonl_doc(taxonomy, allowed), on_bad_record=on_bad_record, bad=bad)


def read_toutiao(path: str | Path, keywords: bool = False, on_bad_record: str = "error") -> list[Doc]:
    """``id_!_code_!_name_!_headline_!_keywords`` lines -> docs labelled with the category name."""
    check_on_bad_record(on_bad_record)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    docs, bad = [], BadRecords()
    with check_utf8(path).open(encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("_!_")
            try:
                if len(fields) not in (4, 5):
                    raise ValueError(f"expected 5 '_!_'-separated fields, got {len(fields)}")
                code, name = fields[1].strip(), require_text(fields[2], "category_name")
                if code not in TOUTIAO_CLASSES:
                    raise ValueError(f"unknown class code {code!r} (known: {', '.join(TOUTIAO_CLASSES)})")
                if TOUTIAO_CLASSES[code] != name:
                    raise ValueError(f"class code {code} is {TOUTIAO_CLASSES[code]!r}, not {name!r}")
                text = require_text(fields[3], "headline")
                if keywords and len(fields) == 5 and fields[4].strip():
                    text = f"{text} {fields[4].replace(',', ' ')}"
                docs.append(Doc(text, (name,)))
            except ValueError as e:
                if on_bad_record == "error":
                    raise DataError(f"{path}:{lineno}: {e}") from None
                bad.add(f"{path}:{lineno}: {e}")
    if bad.count:
        log.warning("%s: skipped %d bad record(s), e.g. %s", path, bad.count, "; ".join(bad.examples[:3]))
    if not docs:
        raise DataError(f"{path}: no records")
    return docs


# ------------------------------------------------------------------------------------------- label space


class LabelSpace:
    """The model's output columns for a task, and how a record's labels map onto them."""

    def __init__(self, task: str, labels: Sequence[str], parents: Sequence[int] | None = None):
        if task not in TASKS:
            raise ConfigError(f"data.task: expected one of {TASKS}, got {task!r}")
        self.task, self.labels = task, list(labels)
        self.parents = list(parents) if parents is not None else [-1] * len(self.labels)
        self.index = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def build(cls, task: str, docs: Sequence[Doc], taxonomy: Taxonomy | None, positive_label: str | None):
        if task == "binary":
            if not positive_label:
                raise ConfigError("data.positive_label: a binary task needs the positive label (e.g. 新车资讯)")
            known = {a for d in docs for a in with_ancestors(d.labels)}
            if positive_label not in known:
                raise ConfigError(f"data.positive_label: {positive_label!r} never occurs in the training data")
            return cls(task, [positive_label])
        if task == "hierarchical":
            tax = taxonomy or Taxonomy(sorted({label for d in docs for label in d.labels if label != OTHER}))
            return cls(task, tax.labels, tax.parent_index())
        if taxonomy is not None:
            labels = [label for label in taxonomy.labels if task == "multiclass" or any(label in d.labels for d in docs)]
        else:
            labels = sorted({label for d in docs for label in d.labels if label != OTHER or task == "multiclass"})
        return cls(task, labels)

    def encode(self, labels: Sequence[str]) -> np.ndarray:
        row = np.zeros(len(self.labels), dtype=np.float32)
        if self.task == "binary":
            row[0] = float(self.labels[0] in with_ancestors(labels))
            return row
        if self.task == "multiclass":
            if len(labels) != 1:
                raise ValueError(f"a multiclass record needs exactly one label, got {list(labels)}")
        names = with_ancestors(labels) if self.task == "hierarchical" else labels
        for name in names:
            if name == OTHER and name not in self.index:
                continue
            if name not in self.index:
                raise ValueError(f"label {name!r} is not one of the model's labels ({', '.join(self.labels[:8])}...)")
            row[self.index[name]] = 1.0
        return row

    def encode_many(self, docs: Sequence[Doc], where: str = "") -> np.ndarray:
        rows = []
        for i, d in enumerate(docs):
            try:
                rows.append(self.encode(d.labels))
            except ValueError as e:
                raise DataError(f"{where or 'data'}:{i + 1}: {e}") from None
        return np.stack(rows) if rows else np.zeros((0, len(self.labels)), np.float32)

    def decode_row(self, row: Sequence[int]) -> list[str]:
        names = [self.labels[i] for i, v in enumerate(row) if v]
        return names or ([OTHER] if self.task != "multiclass" else [])

    @property
    def state(self) -> dict:
        return {"task": self.task, "labels": self.labels, "parents": self.parents}

    @classmethod
    def from_state(cls, state: dict) -> LabelSpace:
        return cls(state["task"], state["labels"], state["parents"])


# ----------------------------------------------------------------------------------------------- dataset


class TextDataset(Dataset):
    def __init__(self, docs: Sequence[Doc], ids: Sequence[Sequence[int]], targets: np.ndarray):
        self.docs, self.ids, self.targets = list(docs), list(ids), torch.as_tensor(targets)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return self.ids[i], self.targets[i], i


def collate(pad_id: int = 0):
    def fn(batch):
        ids, targets, index = zip(*batch, strict=True)
        width = max(1, max(len(x) for x in ids))
        out = torch.full((len(ids), width), pad_id, dtype=torch.long)
        for i, x in enumerate(ids):
            out[i, : len(x)] = torch.as_tensor(x, dtype=torch.long)
        return {"ids": out, "target": torch.stack(targets), "index": torch.as_tensor(index)}

    return fn


def _train_first(cut: dict[str, list[Doc]]) -> None:
    """A record cut into val / test whose label no training record has would leave that label outside the
    model (and fail as unknown): such records go to the training part instead, so a rare label is learnt."""
    seen = {label for d in cut["train"] for label in d.labels}
    for name in ("val", "test"):
        kept = []
        for d in cut.get(name, []):
            if set(d.labels) - seen:
                cut["train"].append(d)
                seen.update(d.labels)
            else:
                kept.append(d)
        if name in cut:
            moved = len(cut[name]) - len(kept)
            if moved:
                log.info("data: %d %s record(s) with a label no training record has moved to train", moved, name)
            cut[name] = kept


def check_learnable(space: LabelSpace, targets: np.ndarray, where: str) -> None:
    """Refuse a training part that cannot teach a classifier anything: one class only, or every record with
    the same labels (it used to train, exit 0, and report micro-F1 0.0 beside accuracy 1.0)."""
    if len(targets) == 0:
        raise DataError(f"{where}: no training records")
    if space.task == "multiclass":
        present = [space.labels[i] for i in np.flatnonzero(targets.sum(0))]
        if len(present) < 2:
            raise DataError(f"{where}: every training record has the label {present[0]!r}; a multiclass task "
                            "needs at least two classes")
    elif (targets == targets[0]).all():
        labels = [space.labels[i] for i in np.flatnonzero(targets[0])]
        what = f"the label(s) {', '.join(map(repr, labels))}" if labels else "no label of the task's label space"
        hint = (f" (data.positive_label={space.labels[0]!r} needs records without it too)"
                if space.task == "binary" else "")
        raise DataError(f"{where}: every training record has {what}; nothing to tell apart{hint}")
    for i in np.flatnonzero(targets.min(0) == 1):
        log.warning("data: every training record has the label %r: its column cannot learn when it is off", space.labels[i])


def _where(path: str | None) -> str:
    return str(path) if path else "synthetic"


class TextDataModule(pl.LightningDataModule):
    """Reads, splits, tokenises and encodes everything up front (the model's sizes depend on it)."""

    def __init__(self, cfg: DataConfig, pretrained_tokenizer: str | None = None, root: str | None = None):
        super().__init__()
        self.cfg = cfg
        for key, allowed in (("source", SOURCES), ("task", TASKS), ("sampler", SAMPLERS)):
            if getattr(cfg, key) not in allowed:
                raise ConfigError(f"data.{key}: expected one of {allowed}, got {getattr(cfg, key)!r}")
        self.taxonomy = Taxonomy.read(cfg.taxonomy) if cfg.taxonomy else None
        if cfg.source == "synthetic" and self.taxonomy is None:
            self.taxonomy = Taxonomy.car_news()
        train, val, test = self._read()
        self.space = LabelSpace.build(cfg.task, train, self.taxonomy, cfg.positive_label or (GATE if cfg.source == "synthetic" else None))
        if pretrained_tokenizer:
            self.encoder = HFEncoder(pretrained_tokenizer, cfg.max_len)
        else:
            self.encoder = VocabEncoder.fit(
                (d.text for d in train), cfg.tokenizer, cfg.max_len, cfg.min_freq, cfg.max_vocab
            )
        self.train = self.dataset(train, _where(cfg.train_file))
        check_learnable(self.space, self.train.targets.numpy(), _where(cfg.train_file))
        self.val = self.dataset(val, _where(cfg.val_file or cfg.train_file))
        self.test = self.dataset(test, _where(cfg.test_file or cfg.train_file))
        self.label_counts = self.train.targets.sum(0).tolist()
        self.fingerprint = fingerprint([[d.text, list(d.labels)] for d in train + val + test])
        log.info(
            "data: %d train / %d val / %d test, %d labels, vocab %d",
            len(self.train), len(self.val), len(self.test), len(self.space.labels), self.encoder.vocab_size,
        )

    # -- reading and splitting
    def _read(self) -> tuple[list[Doc], list[Doc], list[Doc]]:
        cfg = self.cfg
        if cfg.source == "synthetic":
            docs = generate(cfg.synth.n, cfg.synth.seed, cfg.synth.label_noise, cfg.synth.char_noise)
            return self._split(docs, [GATE in with_ancestors(d.labels) for d in docs], {})
        if not cfg.train_file:
            raise ConfigError(f"data.train_file: required for data.source={cfg.source}")
        given = {part: getattr(cfg, f"{part}_file") for part in ("val", "test") if getattr(cfg, f"{part}_file")}
        for part, path in given.items():
            if Path(path).resolve() == Path(cfg.train_file).resolve():
                raise ConfigError(f"data.{part}_file: is data.train_file itself; leave it unset to split train_file")
        if cfg.source == "toutiao":
            train = read_toutiao(cfg.train_file, cfg.keywords, cfg.on_bad_record)
            files = {part: read_toutiao(path, cfg.keywords, cfg.on_bad_record) for part, path in given.items()}
            return self._split(train, [d.labels[0] for d in train], files)
        train = read_docs(cfg.train_file, self.taxonomy, None, cfg.on_bad_record)
        allowed = None if self.taxonomy else {label for d in train for label in d.labels} | {OTHER}
        files = {part: read_docs(path, self.taxonomy, allowed, cfg.on_bad_record) for part, path in given.items()}
        return self._split(train, ["|".join(sorted(d.labels)) for d in train], files)

    def _split(self, docs: list[Doc], strata: list, files: dict[str, list[Doc]]) -> tuple[list[Doc], list[Doc], list[Doc]]:
        """``(train, val, test)``: a part read from its own file (``data.val_file`` / ``data.test_file``) is
        taken as it is; the others are cut from ``docs`` in the proportions of ``data.split`` (rescaled to the
        parts that are cut), deterministically by ``data.split_seed``."""
        if len(self.cfg.split) != 3:
            raise ConfigError(f"data.split: expected 3 fractions (train, val, test), got {list(self.cfg.split)}")
        names = [name for name in ("train", "val", "test") if name not in files]
        if names == ["train"]:
            return docs, files["val"], files["test"]
        shares = [f for name, f in zip(("train", "val", "test"), self.cfg.split, strict=True) if name in names]
        shares = [f / sum(shares) for f in shares] if all(f > 0 for f in shares) else shares
        parts = stratified_split(strata, shares, self.cfg.split_seed) if strata else random_split(
            len(docs), shares, self.cfg.split_seed
        )
        cut = {name: [docs[i] for i in idx] for name, idx in zip(names, parts, strict=True)}
        if "train" in cut:
            _train_first(cut)
        return cut["train"], files.get("val", cut.get("val")), files.get("test", cut.get("test"))

    def dataset(self, docs: Sequence[Doc], where: str = "data") -> TextDataset:
        return TextDataset(docs, self.encoder.encode_many([d.text for d in docs]), self.space.encode_many(docs, where))

    # -- loaders
    def _loader(self, ds: TextDataset, shuffle: bool = False, sampler=None) -> DataLoader:
        return DataLoader(
            ds, batch_size=self.cfg.batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
            collate_fn=collate(self.encoder.pad_id), num_workers=self.cfg.num_workers,
        )

    def _sampler(self):
        kind, targets = self.cfg.sampler, self.train.targets.numpy()
        seed = self.cfg.split_seed
        if kind == "balanced":
            keys = ["|".join(map(str, np.flatnonzero(r))) for r in targets]
            return samplers.weighted_sampler(samplers.class_balanced_weights(keys), seed=seed)
        if kind == "rare":
            return samplers.weighted_sampler(samplers.rare_label_weights(targets, self.cfg.sampler_power), seed=seed)
        if kind == "oversample":
            idx = samplers.oversample_indices(targets, self.cfg.oversample_min_count, seed)
            return torch.utils.data.SubsetRandomSampler(idx.tolist(), generator=torch.Generator().manual_seed(seed))
        return None

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, shuffle=True, sampler=self._sampler())

    def train_eval_dataloader(self) -> DataLoader:
        """The training set in order, without sampling (for kNN banks and threshold studies)."""
        return self._loader(self.train)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test)

    def loader(self, ds: TextDataset) -> DataLoader:
        return self._loader(ds)
