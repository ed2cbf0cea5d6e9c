"""``python -m retrieval.index ckpt=... [data=shopee data.path=...] kind=flat|ivf|hnsw``: embed a catalog with a
trained model (cached under ``paths.cache_dir/retrieval/emb``), build the FAISS index (:mod:`retrieval.knn`) and
write it with ``faiss.write_index`` (atomically) beside ``index.ids.txt``.

Without ``ckpt`` (``ckpt=null``, the default) the towers of the ``model`` node are built untrained from config
alone, as for ``retrieval.eval`` (``model.image.arch=local-dir:/models/siglip``, ``model=minilm``; not cached).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common import entry, io
from common.data.fingerprint import fingerprint
from retrieval.build import data_config, zero_shot_unless_ckpt
from retrieval.data import load_catalog
from retrieval.embed import cached_embed, embed_catalog, load_module
from retrieval.knn import timed_build


def _main(cfg):
    import faiss

    io.check_writable(cfg.output, "output", {"ckpt": cfg.ckpt})
    module = zero_shot_unless_ckpt(cfg) or load_module(cfg.ckpt)
    cat, _ = load_catalog(data_config(cfg.data))
    fp = fingerprint(zip(cat.ids, cat.titles, cat.groups, strict=True))
    emb = embed_catalog(module, cat, range(len(cat))) if cfg.ckpt is None else \
        cached_embed(module, cfg.ckpt, cat, range(len(cat)), cfg.paths.cache_dir, fp)
    x = np.stack([emb[i] for i in range(len(cat))])
    index, secs = timed_build(x, kind=cfg.kind, nlist=int(cfg.nlist), nprobe=int(cfg.nprobe), hnsw_m=int(cfg.hnsw_m),
                              ef_search=int(cfg.ef_search), gpu=cfg.gpu)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
        index = faiss.index_gpu_to_cpu(index)
    tmp = out.with_name(f".{out.name}.tmp")  # faiss writes by path: renamed into place, removed on failure
    try:
        faiss.write_index(index, str(tmp))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    io.write_text(out.with_suffix(".ids.txt"), "\n".join(cat.ids) + "\n")
    print(f"{cfg.kind} index of {index.ntotal} x {x.shape[1]} built in {secs:.2f}s -> {out}")


def main():
    return entry.main("retrieval", config_name="index")(_main)()


if __name__ == "__main__":
    main()
