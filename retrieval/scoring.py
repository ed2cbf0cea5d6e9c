"""Scoring a catalog split with embeddings: ranking metrics, kNN matching with a tuned threshold, Shopee F1.

All metric definitions come from :mod:`common.metrics.retrieval`; this module only builds their inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.metrics.retrieval import map_at_k, mrr, ranked_recall_at_k, recall_at_k, shopee_f1
from common.metrics.thresholds import pick
from retrieval.data import Catalog, Split
from retrieval.knn import knn

THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.02), 2)
DENSE_LIMIT = 50_000_000  # score-matrix cells up to which MRR / mAP use the dense torchmetrics path


def rank_metrics(q_emb: np.ndarray, g_emb: np.ndarray, split: Split, cat: Catalog, prefix: str = "") -> dict:
    """recall@1/5/10, MRR and mAP@10 of queries against the gallery (a query never retrieves itself)."""
    rel = split.relevant(cat)
    keep = [i for i, r in enumerate(rel) if r]
    q_emb, rel, queries = q_emb[keep], [rel[i] for i in keep], split.queries[keep]
    gpos = {int(g): p for p, g in enumerate(split.gallery)}
    self_pos = np.array([gpos.get(int(q), -1) for q in queries])
    out = {}
    if len(q_emb) * len(g_emb) <= DENSE_LIMIT:
        scores = q_emb @ g_emb.T
        rows = np.flatnonzero(self_pos >= 0)
        scores[rows, self_pos[rows]] = -np.inf
        scores = np.where(np.isfinite(scores), scores, -1e4)
        relevance = np.zeros_like(scores, dtype=bool)
        for i, r in enumerate(rel):
            relevance[i, list(r)] = True
        for k in (1, 5, 10):
            out[f"{prefix}recall_at_{k}"] = recall_at_k(scores, relevance, k)
        out[f"{prefix}mrr"] = mrr(scores, relevance)
        out[f"{prefix}map_at_10"] = map_at_k(scores, relevance, 10)
    else:
        _, ids = knn(q_emb, g_emb, 11)
        ids = np.array([[j for j in row if j != s][:10] for row, s in zip(ids, self_pos, strict=True)])
        for k in (1, 5, 10):
            out[f"{prefix}recall_at_{k}"] = ranked_recall_at_k(ids, rel, k)
    return out


def neighbours(pool_emb: np.ndarray, k: int = 50) -> tuple[np.ndarray, np.ndarray]:
    return knn(pool_emb, pool_emb, min(k, len(pool_emb)))


def dense_neighbours(pool_scores: np.ndarray, k: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of a precomputed pool-vs-pool score matrix (for scorers without vectors, e.g. TF-IDF)."""
    k = min(k, pool_scores.shape[1])
    ids = np.argsort(-pool_scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(pool_scores, ids, 1), ids


def score_matrices(qg: np.ndarray, pool: np.ndarray, split: Split, cat: Catalog, prefix: str,
                   threshold: float | None = None, at_least: int = 1) -> tuple[dict, list]:
    """Like :func:`score_split` from score matrices (query x gallery, pool x pool) instead of embeddings."""
    rel = split.relevant(cat)
    keep = [i for i, r in enumerate(rel) if r]
    scores = qg[keep].astype(np.float32).copy()
    gpos = {int(g): p for p, g in enumerate(split.gallery)}
    for r, qi in enumerate(keep):
        if int(split.queries[qi]) in gpos:
            scores[r, gpos[int(split.queries[qi])]] = -1e4
    relevance = np.zeros_like(scores, dtype=bool)
    for r, qi in enumerate(keep):
        relevance[r, list(rel[qi])] = True
    out = {f"{prefix}recall_at_{k}": recall_at_k(scores, relevance, k) for k in (1, 5, 10)}
    out[f"{prefix}mrr"] = mrr(scores, relevance)
    out[f"{prefix}map_at_10"] = map_at_k(scores, relevance, 10)
    ids = [cat.ids[i] for i in split.pool]
    groups = {cat.ids[i]: cat.groups[i] for i in split.pool}
    s, n = dense_neighbours(pool)
    curve = [(float(t), shopee_f1(matches_at(ids, s, n, t, at_least), groups)) for t in THRESHOLDS]
    if threshold is None:
        threshold, f1 = best_threshold(curve)
    else:
        f1 = shopee_f1(matches_at(ids, s, n, threshold, at_least), groups)
    out[f"{prefix}f1"], out[f"{prefix}threshold"] = f1, float(threshold)
    return out, curve


def matches_at(ids: Sequence[str], scores: np.ndarray, nn: np.ndarray, threshold: float,
               at_least: int = 1) -> dict[str, list[str]]:
    """Each posting's matches: itself plus neighbours with similarity >= threshold; ``at_least=2`` adds the
    best other neighbour when nothing else passes (the Kaggle "at least 2 matches" trick)."""
    out = {}
    for row, (s, n) in enumerate(zip(scores, nn, strict=True)):
        m = [ids[row]] + [ids[j] for j, v in zip(n, s, strict=True) if j >= 0 and j != row and v >= threshold]
        if len(m) < at_least:
            others = [ids[j] for j in n if j >= 0 and j != row]
            m += others[: at_least - len(m)]
        out[ids[row]] = m
    return out


def f1_curve(pool_emb: np.ndarray, split: Split, cat: Catalog, at_least: int = 1,
             thresholds: np.ndarray = THRESHOLDS, k: int = 50) -> list[tuple[float, float]]:
    """Shopee F1 of the pool at every threshold."""
    ids = [cat.ids[i] for i in split.pool]
    groups = {cat.ids[i]: cat.groups[i] for i in split.pool}
    s, n = neighbours(pool_emb, k)
    return [(float(t), shopee_f1(matches_at(ids, s, n, t, at_least), groups)) for t in thresholds]


def best_threshold(curve: list[tuple[float, float]]) -> tuple[float, float]:
    """``(threshold, f1)`` of an F1 curve, tie-broken as every threshold search is (:func:`common.metrics.thresholds.pick`)."""
    return pick([t for t, _ in curve], [f for _, f in curve])


def score_split(emb: dict[int, np.ndarray], split: Split, cat: Catalog, prefix: str, threshold: float | None = None,
                at_least: int = 1) -> tuple[dict, list[tuple[float, float]]]:
    """All metrics of one split. ``threshold=None`` tunes it here (validation); else it is applied (test)."""
    q = np.stack([emb[int(i)] for i in split.queries])
    g = np.stack([emb[int(i)] for i in split.gallery])
    p = np.stack([emb[int(i)] for i in split.pool])
    out = rank_metrics(q, g, split, cat, prefix)
    curve = f1_curve(p, split, cat, at_least)
    if threshold is None:
        threshold, f1 = best_threshold(curve)
    else:
        ids = [cat.ids[i] for i in split.pool]
        s, n = neighbours(p)
        f1 = shopee_f1(matches_at(ids, s, n, threshold, at_least), {cat.ids[i]: cat.groups[i] for i in split.pool})
    out[f"{prefix}f1"] = f1
    out[f"{prefix}threshold"] = float(threshold)
    return out, curve
