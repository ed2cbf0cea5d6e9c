"""Training and using the cross-encoder reranker.

* ``loss="bce"``: pairwise binary cross-entropy on labelled pairs (DeepMatcher / Ditto splits).
* ``loss="grouped_ce"``: FlagEmbedding-style groups ``[query, pos, neg_1..neg_n]``, cross-entropy with the
  positive first (target 0).

:class:`RerankerModule` is a LightningModule; its validation picks the score threshold with the best pair
F1 (kept in the checkpoint) and test reports pair P/R/F1 at it (``common.metrics.retrieval.pair_prf``).
:func:`rerank` reorders retrieved top-k candidates by cross-encoder score.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from common import optim
from common.distributed import gathered_arrays
from common.errors import ConfigError
from common.metrics.retrieval import pair_prf
from common.metrics.thresholds import best_f1_threshold
from retrieval.data import ditto_fields, read_ditto
from retrieval.models.reranker import CrossEncoder
from retrieval.pairs import (
    SPLITS,
    Augmenter,
    Summariser,
    inject_codes,
    pair_source,
    read_table_pairs,
    serialise_record,
)


def serialise(text_or_fields, fields: list[str] | None) -> str:
    """A record's text for the cross-encoder: the chosen Ditto fields joined (``name`` / ``title`` …)."""
    if isinstance(text_or_fields, str) and " VAL " in text_or_fields:
        d = ditto_fields(text_or_fields)
    elif isinstance(text_or_fields, dict):
        d = text_or_fields
    else:
        return str(text_or_fields)
    keys = fields or list(d)[:1]
    text = " ".join(d.get(k, "") for k in keys if d.get(k)).strip()
    if not text:  # a placeholder would train the matcher on a made-up string
        raise ValueError(f"empty text in {', '.join(keys) or 'the record'}")
    return text


def ditto_text(text: str, fields: list[str] | None) -> str:
    """A Ditto-serialised record kept whole (``fields``: only those attributes, in that order)."""
    if not fields:
        return text
    return serialise_record(ditto_fields(text), fields)


def norm(text: str) -> str:
    """Case/punctuation/spacing-insensitive form (Ditto lowercases and re-tokenises the raw titles)."""
    return re.sub(r"[^0-9a-z]+", "", text.lower())


class PairSet(Dataset):
    """Labelled pairs; ``augment`` (training only) rewrites a pair each time it is drawn (Ditto's operators)."""

    def __init__(self, pairs: list[tuple[str, str, int]], augment: Augmenter | None = None):
        self.pairs, self.augment = pairs, augment

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        left, right, y = self.pairs[i]
        if self.augment is not None:
            left, right = self.augment(left, right)
        return left, right, y


class BalancedNegatives(Sampler[int]):
    """Every positive and ``neg_per_pos`` negatives a positive, a fresh seeded draw of the negatives each epoch
    (``set_epoch``, which Lightning calls; without it each pass counts as the next epoch), so a short balanced
    epoch still sees all the negatives over a run. The same draw on every rank (seed + epoch)."""

    def __init__(self, labels: list[int], neg_per_pos: int, seed: int = 0):
        self.pos = [i for i, y in enumerate(labels) if y]
        self.neg = [i for i, y in enumerate(labels) if not y]
        self.k = min(len(self.neg), neg_per_pos * len(self.pos))
        self.seed, self._next = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self._next = epoch

    def __len__(self):
        return len(self.pos) + self.k

    def __iter__(self):
        epoch, self._next = self._next, self._next + 1
        rng = random.Random(self.seed * 100003 + epoch)
        order = self.pos + rng.sample(self.neg, self.k)
        rng.shuffle(order)
        return iter(order)


def collate_pairs(batch):
    left, right, y = zip(*batch, strict=True)
    return {"left": list(left), "right": list(right), "label": torch.tensor(y, dtype=torch.float32)}


class GroupSet(Dataset):
    """``(query, [pos, neg...])`` groups from labelled pairs: each positive with ``n`` negatives of its query
    (or random ones)."""

    def __init__(self, pairs: list[tuple[str, str, int]], n: int, seed: int):
        by_q: dict[str, list[str]] = {}
        for left, right, y in pairs:
            if not y:
                by_q.setdefault(left, []).append(right)
        self.all_neg = [r for _, r, y in pairs if not y]
        self.groups = [(left, right, by_q.get(left, [])) for left, right, y in pairs if y]
        self.n, self.seed = n, seed

    def __len__(self):
        return len(self.groups)

    def __getitem__(self, i):
        q, p, negs = self.groups[i]
        rng = random.Random(self.seed * 100003 + i)
        picked = rng.sample(negs, min(self.n, len(negs)))
        while len(picked) < self.n:
            picked.append(rng.choice(self.all_neg))
        return q, [p, *picked]


def collate_groups(batch):
    return {"query": [q for q, _ in batch], "docs": [d for _, d in batch]}


class RerankerModule(pl.LightningModule):
    def __init__(self, encoder: dict, loss: str = "bce", pos_weight: float = 1.0, optim: dict | None = None,
                 scheduler: dict | None = None, serialisation: dict | None = None):
        """``serialisation``: how its training pairs were written (``text``, ``fields``, ``summarise``), kept
        in the checkpoint so a user of the model writes records the same way."""
        super().__init__()
        self.save_hyperparameters()
        if loss not in ("bce", "grouped_ce"):
            raise ConfigError(f"reranker.loss: expected bce|grouped_ce, got {loss!r}")
        self.net = CrossEncoder(**encoder)
        self.net.train()  # see on_train_epoch_start
        self.register_buffer("threshold", torch.tensor(0.0))
        self._scores, self._labels = [], []

    def on_train_epoch_start(self):
        self.net.train()  # from_pretrained returns eval mode (dropout off); Lightning keeps submodule modes

    def training_step(self, batch, batch_idx):
        if "docs" in batch:  # grouped CE, positive first
            n = len(batch["docs"][0])
            left = [q for q in batch["query"] for _ in range(n)]
            right = [d for docs in batch["docs"] for d in docs]
            logits = self.net(left, right).view(-1, n)
            loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
        else:
            logits = self.net(batch["left"], batch["right"])
            pw = torch.tensor(self.hparams.pos_weight, device=logits.device)
            loss = F.binary_cross_entropy_with_logits(logits, batch["label"].to(logits.device), pos_weight=pw)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(logits))
        return loss

    def _eval_step(self, batch):
        self._scores.append(self.net(batch["left"], batch["right"]).float().cpu())
        self._labels.append(batch["label"].cpu())

    validation_step = test_step = lambda self, batch, batch_idx: self._eval_step(batch)  # noqa: E731

    def _flush(self, stage: str):
        """This split's ``(scores, labels)`` from every rank, so each rank tunes the same threshold."""
        s, y = torch.cat(self._scores).numpy(), torch.cat(self._labels).numpy().astype(int)
        self._scores, self._labels = [], []
        loader = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        n = len(loader.dataset) if hasattr(loader, "dataset") else None
        return gathered_arrays((s, y), self.trainer.world_size, n=n)

    def on_validation_epoch_end(self):
        s, y = self._flush("val")
        if self.trainer.sanity_checking:
            return
        thr, prf = best_pair_threshold(s, y)
        self.threshold.fill_(thr)
        self.log_dict({"val/pair_f1": prf.f1, "val/pair_precision": prf.precision, "val/pair_recall": prf.recall},
                      prog_bar=True)

    def on_test_epoch_end(self):
        s, y = self._flush("test")
        prf = pair_prf(y, (s >= float(self.threshold)).astype(int))
        self.log_dict({"test/pair_f1": prf.f1, "test/pair_precision": prf.precision, "test/pair_recall": prf.recall})

    def configure_optimizers(self):
        return optim.from_hparams(self)

    def record_texts(self, records: list[dict]) -> list[str]:
        """Records (``{title: ...}`` or a table row) written the way this model's training pairs were: Ditto's
        ``COL k VAL v`` for a matcher (``text=all``), the plain values for a title reranker."""
        s = self.hparams.get("serialisation") or {}
        if s.get("text") == "all":
            texts = [serialise_record(r) for r in records]
        else:
            texts = [" ".join(str(v) for k, v in r.items() if k != "id" and v).strip() for r in records]
        return [inject_codes(t) for t in texts] if s.get("codes") else texts

    @torch.no_grad()
    def score(self, left: list[str], right: list[str], batch_size: int = 64) -> np.ndarray:
        self.eval()
        out = [self.net(left[i : i + batch_size], right[i : i + batch_size]).float().cpu().numpy()
               for i in range(0, len(left), batch_size)]
        return np.concatenate(out) if out else np.zeros(0)


def best_pair_threshold(scores: np.ndarray, labels: np.ndarray):
    """``(threshold, PRF)`` with the best pair F1 (candidates: 201 quantiles of the scores; ties as
    :func:`common.metrics.thresholds.pick`); ``(0.0, PRF of no match)`` when no threshold finds a match."""
    candidates = np.unique(np.quantile(scores, np.linspace(0, 1, 201)))
    t, f1 = best_f1_threshold(scores, labels, candidates)
    if f1 <= 0:
        return 0.0, pair_prf(labels, np.zeros_like(labels))
    return t, pair_prf(labels, (scores >= t).astype(int))


class PairDataModule(pl.LightningDataModule):
    """Labelled pairs from a folder: Ditto's ``train/valid/test.txt`` (``left<TAB>right<TAB>label``, directly or
    under ``ditto_deepmatcher_splits/``) or DeepMatcher tables + ``train/valid/test.csv`` (``source``).

    ``text="fields"`` reads the chosen attributes (default the first: name / title) as plain text, the
    reranker's input; ``text="all"`` keeps Ditto's ``COL x VAL ...`` serialisation of every attribute (or of
    ``fields``), the matcher's. ``summarise`` (a budget in the cross-encoder's tokens a record, ``cost`` counts
    them) keeps the most informative words of long records, fitted on the train and valid records only.
    ``augment`` lists Ditto's operators for training pairs (``augment_p`` of them are rewritten). ``codes``
    injects the separator-free form of product codes (:func:`retrieval.pairs.inject_codes`) before summarising.
    ``neg_per_pos`` keeps every positive and that many negatives a positive: drawn once (``resample=False``)
    or afresh each epoch (:class:`BalancedNegatives`)."""

    def __init__(self, folder: str, fields: list[str] | None = None, batch_size: int = 32, loss: str = "bce",
                 group_size: int = 4, neg_per_pos: int | None = 3, seed: int = 0, eval_batch_size: int = 64,
                 exclude_texts: set[str] | None = None, text: str = "fields", summarise: int | None = None,
                 augment: list[str] | None = None, augment_p: float = 0.5, source: str = "auto",
                 cost: Callable[[str], int] | None = None, codes: bool = False, resample: bool = False):
        super().__init__()
        if text not in ("fields", "all"):
            raise ConfigError(f"model.reranker.text: expected fields|all, got {text!r}")
        folder = Path(folder)
        if pair_source(folder, source) == "ditto":
            ditto = folder / "ditto_deepmatcher_splits" if (folder / "ditto_deepmatcher_splits").is_dir() else folder
            keep = (lambda t: serialise(t, fields)) if text == "fields" else (lambda t: ditto_text(t, fields))
            splits = {s: read_ditto(ditto / f"{s}.txt", keep) for s in SPLITS}
        else:
            splits = read_table_pairs(folder, seed=seed)
            if text == "fields" or fields:
                pick = (lambda t: serialise(t, fields)) if text == "fields" else (lambda t: ditto_text(t, fields))
                splits = {s: [(pick(a), pick(b), y) for a, b, y in ps] for s, ps in splits.items()}
        if codes:
            splits = {s: [(inject_codes(a), inject_codes(b), y) for a, b, y in ps] for s, ps in splits.items()}
        if summarise:
            summ = Summariser(int(summarise), cost).fit(t for s in ("train", "valid") for a, b, _ in splits[s] for t in (a, b))
            splits = {s: [(summ(a), summ(b), y) for a, b, y in ps] for s, ps in splits.items()}
        self.train_pairs, self.val_pairs, self.test_pairs = splits["train"], splits["valid"], splits["test"]
        if exclude_texts:  # keep records held out elsewhere (e.g. a retrieval test split) out of training
            self.train_pairs = [p for p in self.train_pairs if norm(p[0]) not in exclude_texts and norm(p[1]) not in exclude_texts]
        self.sampler = None
        if neg_per_pos and resample:
            self.sampler = BalancedNegatives([y for *_, y in self.train_pairs], int(neg_per_pos), seed)
        elif neg_per_pos:  # keep every positive and a seeded sample of negatives (CPU budget)
            pos = [p for p in self.train_pairs if p[2]]
            neg = [p for p in self.train_pairs if not p[2]]
            rng = random.Random(seed)
            self.train_pairs = pos + rng.sample(neg, min(len(neg), neg_per_pos * len(pos)))
        self.augment = Augmenter(augment, augment_p, seed) if augment else None
        self.batch_size, self.loss, self.group_size, self.seed = batch_size, loss, group_size, seed
        self.eval_batch_size = eval_batch_size

    def train_dataloader(self):
        if self.loss == "grouped_ce":
            return DataLoader(GroupSet(self.train_pairs, self.group_size - 1, self.seed), batch_size=max(1, self.batch_size // self.group_size),
                              shuffle=True, collate_fn=collate_groups)
        return DataLoader(PairSet(self.train_pairs, self.augment), batch_size=self.batch_size,
                          shuffle=self.sampler is None, sampler=self.sampler, collate_fn=collate_pairs)

    def val_dataloader(self):
        return DataLoader(PairSet(self.val_pairs), batch_size=self.eval_batch_size, collate_fn=collate_pairs)

    def test_dataloader(self):
        return DataLoader(PairSet(self.test_pairs), batch_size=self.eval_batch_size, collate_fn=collate_pairs)


def rerank_scores(module: RerankerModule, queries: list[str], candidates: list[list[str]]) -> list[np.ndarray]:
    """Per query, the cross-encoder logit of each of its candidates."""
    left = [q for q, cs in zip(queries, candidates, strict=True) for _ in cs]
    right = [c for cs in candidates for c in cs]
    s = module.score(left, right)
    bounds = np.cumsum([0, *(len(cs) for cs in candidates)])
    return [s[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def rerank(module: RerankerModule, queries: list[str], candidates: list[list[str]]) -> list[np.ndarray]:
    """Per query, the order (indices into its candidate list) by descending cross-encoder score."""
    return [np.argsort(-s, kind="stable") for s in rerank_scores(module, queries, candidates)]


def fuse(first_stage: np.ndarray, rerank_logits: np.ndarray, alpha: float) -> np.ndarray:
    """Candidate order by ``first_stage + alpha * rerank_logit`` (``alpha=inf``: the cross-encoder alone, the
    first-stage score breaking ties). ``alpha=0`` keeps the first-stage order, so a weight tuned on
    validation can only keep or improve it there."""
    fused = rerank_logits + 1e-6 * first_stage if np.isinf(alpha) else first_stage + alpha * rerank_logits
    return np.argsort(-fused, kind="stable")
