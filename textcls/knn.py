"""kNN few-shot vote: embed with any trained encoder, take the k nearest training texts, vote per label."""

from __future__ import annotations

import numpy as np


def knn_vote(bank: np.ndarray, bank_targets: np.ndarray, query: np.ndarray, k: int = 5) -> np.ndarray:
    """``[n_query, L]``: the share of the ``k`` most cosine-similar bank rows carrying each label."""
    import faiss

    def norm(x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(norm(bank))
    k = min(k, len(bank))
    _, nn = index.search(norm(query), k)
    return np.asarray(bank_targets, dtype=np.float32)[nn].mean(1)
