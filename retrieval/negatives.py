"""Hard-negative mining as FlagEmbedding's ``hn_mine`` does it: per query, candidates from a rank window of
its nearest neighbours (positives and the query itself removed, too-similar ones dropped), sampled.
``python -m retrieval.mine`` is the command line."""

from __future__ import annotations

import random

import numpy as np

from retrieval.knn import knn


def mine_negatives(q_emb: np.ndarray, c_emb: np.ndarray, positives: list[set[int]], exclude: list[set[int]],
                   range_for_sampling: tuple[int, int] = (2, 200), negative_number: int = 15,
                   score_ceiling: float | None = None, seed: int = 0) -> list[list[int]]:
    """Per query, ``negative_number`` candidate indices sampled from its rank window (1-based, inclusive)."""
    lo, hi = range_for_sampling
    scores, ids = knn(q_emb, c_emb, hi)
    rng = random.Random(seed)
    out = []
    for q, (s, n) in enumerate(zip(scores, ids, strict=True)):
        window = [(j, v) for j, v in zip(n[lo - 1 : hi], s[lo - 1 : hi], strict=True) if j >= 0]
        cands = [int(j) for j, v in window if int(j) not in positives[q] and int(j) not in exclude[q]
                 and (score_ceiling is None or v <= score_ceiling)]
        if len(cands) < negative_number:  # FlagEmbedding tops up from the rest of the pool at random
            rest = [j for j in range(len(c_emb)) if j not in positives[q] and j not in exclude[q] and j not in cands]
            cands += rng.sample(rest, min(len(rest), negative_number - len(cands)))
        out.append(rng.sample(cands, min(negative_number, len(cands))))
    return out


def mine_texts(rows: list[dict], pool: list[str], encode, **kw) -> list[dict]:
    """FlagEmbedding rows in, rows with mined ``neg`` out (texts; the query and its positives never appear)."""
    pool = list(dict.fromkeys(pool))
    pos_of = {t: i for i, t in enumerate(pool)}
    q_emb, c_emb = encode([r["query"] for r in rows]), encode(pool)
    positives = [{pos_of[p] for p in r["pos"] if p in pos_of} for r in rows]
    exclude = [{pos_of[r["query"]]} if r["query"] in pos_of else set() for r in rows]
    negs = mine_negatives(q_emb, c_emb, positives, exclude, **kw)
    return [{**r, "neg": [pool[j] for j in n]} for r, n in zip(rows, negs, strict=True)]
