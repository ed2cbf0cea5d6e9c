"""FAISS indexes over L2-normalised embeddings (Flat inner product, IVF, HNSW; on GPU when faiss has GPUs)
and exact/approximate k-nearest-neighbour search. ``python -m retrieval.index`` is the command line."""

from __future__ import annotations

import time

import numpy as np

from common.errors import ConfigError


def build_index(emb: np.ndarray, kind: str = "flat", nlist: int = 1024, nprobe: int = 16, hnsw_m: int = 32,
                ef_search: int = 64, gpu: bool | str = "auto", ef_construction: int = 40, train_size: int = 0,
                seed: int = 0):
    """An inner-product index over L2-normalised ``emb`` (cosine similarity).

    IVF trains its k-means on ``train_size`` seeded rows when set (FAISS would use up to 256 per list;
    a few dozen per list are enough and keep a million-row build to seconds); HNSW builds with
    ``ef_construction`` (FAISS's default 40) and searches with ``ef_search``.
    """
    import faiss

    emb = np.ascontiguousarray(emb, dtype=np.float32)
    d = emb.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = max(1, min(nlist, len(emb) // 39 or 1))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = emb
        if train_size and len(emb) > train_size:
            sample = emb[np.sort(np.random.default_rng(seed).choice(len(emb), train_size, replace=False))]
        index.train(sample)
        index.nprobe = nprobe
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    else:
        raise ConfigError(f"index.kind: expected flat|ivf|hnsw, got {kind!r}")
    use_gpu = (gpu is True or gpu == "auto") and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    if use_gpu and kind != "hnsw":  # FAISS has no GPU HNSW
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(emb)
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, index.ntotal)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def knn(queries: np.ndarray, gallery: np.ndarray, k: int, kind: str = "flat") -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` of the ``k`` nearest gallery rows for each query."""
    return search(build_index(gallery, kind), queries, k)


def timed_build(emb: np.ndarray, **kw) -> tuple[object, float]:
    t = time.perf_counter()
    index = build_index(emb, **kw)
    return index, time.perf_counter() - t
