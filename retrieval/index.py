"""FAISS indexes (Flat inner product, IVF, HNSW; on GPU when faiss has GPUs) and an embedding cache.

``python -m retrieval.index ckpt=... data.kind=shopee data.path=...`` embeds a catalog with a trained
model (cached under ``paths.cache_dir/retrieval/emb``), builds the index and writes it with ``faiss.write_index``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from common import io
from common.errors import ConfigError

log = logging.getLogger(__name__)


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


def cache_key(*parts) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def cached_embeddings(cache_dir: str | Path, key: str, compute) -> np.ndarray:
    """``compute()`` once per key; the array is kept as ``<cache_dir>/<key>.npy`` (written atomically)."""
    path = Path(cache_dir) / f"{key}.npy"
    if path.exists():
        log.info("embeddings from cache %s", path)
        return np.load(path)
    emb = np.asarray(compute(), dtype=np.float32)
    with io.atomic_open(path, "wb") as f:
        np.save(f, emb)
    return emb


def timed_build(emb: np.ndarray, **kw) -> tuple[object, float]:
    t = time.perf_counter()
    index = build_index(emb, **kw)
    return index, time.perf_counter() - t


def _main(cfg):
    import faiss

    from common.data.fingerprint import fingerprint
    from retrieval.build import data_config
    from retrieval.data import load_catalog
    from retrieval.predict import cached_embed, load_module

    module = load_module(cfg.ckpt)
    cat, _ = load_catalog(data_config(cfg.data))
    fp = fingerprint(zip(cat.ids, cat.titles, cat.groups, strict=True))
    emb = cached_embed(module, cfg.ckpt, cat, range(len(cat)), cfg.paths.cache_dir, fp)
    x = np.stack([emb[i] for i in range(len(cat))])
    index, secs = timed_build(x, kind=cfg.kind, nlist=int(cfg.nlist), nprobe=int(cfg.nprobe), hnsw_m=int(cfg.hnsw_m),
                              ef_search=int(cfg.ef_search), gpu=cfg.gpu)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
        index = faiss.index_gpu_to_cpu(index)
    tmp = out.with_name(out.name + ".tmp")
    faiss.write_index(index, str(tmp))
    tmp.replace(out)
    io.write_text(out.with_suffix(".ids.txt"), "\n".join(cat.ids) + "\n")
    print(f"{cfg.kind} index of {index.ntotal} x {x.shape[1]} built in {secs:.2f}s -> {out}")


def main():
    from common import entry

    return entry.main("retrieval", config_name="index")(_main)()


if __name__ == "__main__":
    main()
