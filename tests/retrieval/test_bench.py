"""The FAISS section of ``retrieval.bench`` on a small synthetic set (no timings asserted)."""

from __future__ import annotations

import numpy as np


def test_synthetic_vectors_are_unit_norm_and_queries_find_their_source():
    from retrieval.bench import synthetic_vectors

    x, q = synthetic_vectors(4000, 64, 50, seed=0)
    assert x.shape == (4000, 64) and q.shape == (50, 64) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5) and np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    # a query is a perturbed copy of one row: that row is its exact nearest neighbour
    assert ((q @ x.T).max(1) > 0.95).all()
    again, _ = synthetic_vectors(4000, 64, 50, seed=0)
    assert np.array_equal(x, again)


def test_bench_faiss_sweeps_each_index_knob_and_scores_against_flat():
    from retrieval.bench import bench_faiss

    rows, _ = bench_faiss(6000, 64, 100, seed=0)
    kinds = [(kind, kw.get("nprobe"), kw.get("ef_search")) for kind, kw, *_ in rows]
    assert kinds == [("flat", None, None), ("ivf", 4, None), ("ivf", 16, None), ("ivf", 64, None),
                     ("hnsw", None, 32), ("hnsw", None, 128), ("hnsw", None, 512)]
    recall = {k: r for k, (*_, r) in zip(kinds, rows, strict=True)}
    assert recall[("flat", None, None)] == 1.0
    # probing more lists / a wider beam never finds fewer of the exact top 10 on this data, and IVF probing
    # every list (64 of 64) is exact
    assert recall[("ivf", 4, None)] <= recall[("ivf", 16, None)] <= recall[("ivf", 64, None)] == 1.0
    assert recall[("hnsw", None, 32)] <= recall[("hnsw", None, 512)] and recall[("hnsw", None, 512)] >= 0.95
