"""Retrieval and matching metrics.

* :func:`shopee_f1` is the Kaggle Shopee metric: for every posting, F1 between its predicted match set and
  the set of postings sharing its ``label_group`` (itself included), averaged over postings.
* :func:`recall_at_k`, :func:`mrr`, :func:`map_at_k` take a dense score matrix ``[n_queries, n_gallery]``
  and a boolean relevance matrix of the same shape and are torchmetrics' retrieval metrics (recall@k is
  the share of a query's relevant items found in its top k, averaged over queries with any relevant item;
  mAP@k averages precision@i over the ranks i <= k holding a relevant item, i.e. it divides by the relevant
  items found in the top k, not by min(relevant, k)). They depend on each row's order only (see ``_flat``).
* :func:`ranked_recall_at_k` gives the same recall@k from a FAISS result (top-K ids) without a dense matrix.
* :func:`pair_prf` is precision/recall/F1 of match decisions on labelled pairs (matchers, rerankers).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from sklearn.metrics import precision_recall_fscore_support
from torchmetrics.retrieval import RetrievalMAP, RetrievalMRR, RetrievalRecall

from common.metrics.classification import PRF


def shopee_f1(matches: Mapping[Hashable, Sequence[Hashable]], groups: Mapping[Hashable, Hashable]) -> float:
    """Mean per-posting F1 = 2|P∩T| / (|P| + |T|); every posting in ``groups`` counts, a missing one scores 0.

    The prediction P of a posting is compared as a set (ids outside ``groups`` are false positives); its
    truth T is every posting of its group, itself included (as in the competition, where predicting only
    yourself is therefore not free). Same value as scikit-learn's per-posting ``f1_score`` (tested).
    """
    members: dict[Hashable, set] = {}
    for pid, g in groups.items():
        members.setdefault(g, set()).add(pid)
    scores = []
    for pid, g in groups.items():
        truth, pred = members[g], set(matches.get(pid, ()))
        scores.append(2 * len(truth & pred) / (len(truth) + len(pred)))
    return float(np.mean(scores)) if scores else 0.0


def _flat(scores, relevance) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flattened ``(preds, target, indexes)`` for torchmetrics, with each row's scores replaced by its ranks.

    torchmetrics >= 1.9 counts an item with a score <= 0 as *not retrieved* (``preds > 0`` masks the
    target), so a relevant gallery item at rank 1 with a cosine of -0.1 (or a TF-IDF score of 0) would
    count as a miss. Ranking metrics depend on the order only: ``n_gallery - rank`` (ties broken by gallery
    position, stable) keeps that order and is always positive, and float32 holds such integers exactly.
    """
    s = np.asarray(scores, dtype=np.float64)
    r = torch.as_tensor(np.asarray(relevance)).bool()
    if s.shape != tuple(r.shape) or s.ndim != 2:
        raise ValueError(f"scores and relevance must be equal-shaped 2-D arrays, got {s.shape} and {tuple(r.shape)}")
    ranks = np.empty(s.shape, dtype=np.int64)
    np.put_along_axis(ranks, np.argsort(-s, axis=1, kind="stable"), np.arange(s.shape[1])[None, :], axis=1)
    s = torch.as_tensor(s.shape[1] - ranks, dtype=torch.float32)
    idx = torch.arange(s.shape[0]).unsqueeze(1).expand_as(s)
    return s.reshape(-1), r.reshape(-1), idx.reshape(-1)


def recall_at_k(scores, relevance, k: int) -> float:
    return float(RetrievalRecall(top_k=k, empty_target_action="skip")(*_flat(scores, relevance)))


def mrr(scores, relevance) -> float:
    return float(RetrievalMRR(empty_target_action="skip")(*_flat(scores, relevance)))


def map_at_k(scores, relevance, k: int) -> float:
    return float(RetrievalMAP(top_k=k, empty_target_action="skip")(*_flat(scores, relevance)))


def ranked_recall_at_k(ranked_ids: np.ndarray, relevant: Sequence[set], k: int) -> float:
    """recall@k from top-K id lists (``-1`` pads, as FAISS returns); same definition as :func:`recall_at_k`."""
    ranked_ids = np.asarray(ranked_ids)[:, :k]
    vals = [np.isin(row, list(rel)).sum() / len(rel) for row, rel in zip(ranked_ids, relevant, strict=True) if rel]
    return float(np.mean(vals)) if vals else 0.0


def pair_prf(y_true: Sequence[int], y_pred: Sequence[int]) -> PRF:
    """Precision/recall/F1 of the positive (match) class over labelled pairs."""
    p, r, f, s = precision_recall_fscore_support(
        np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int), labels=[1], average=None, zero_division=0
    )
    return PRF(float(p[0]), float(r[0]), float(f[0]), int(s[0]))
