"""``retrieval.index`` and ``retrieval.match`` run by hand on the session's trained checkpoint: real FAISS, real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli


def _products(trained) -> Path:
    return sorted(Path(trained["cfg"].paths.cache_dir).glob("retrieval/synth_*/products.csv"))[0]


def _ckpt(trained) -> Path:
    return sorted((trained["out"] / "checkpoints").glob("epoch_*.ckpt"))[-1]


def test_index_cli_writes_a_faiss_index_of_the_catalog_in_order(trained, tmp_path):
    import faiss

    from retrieval.data import read_shopee
    from retrieval.embed import embed_catalog, load_module

    csv, ckpt = _products(trained), _ckpt(trained)
    out, cache = tmp_path / "index", tmp_path / "cache"
    r = run_cli("-m", "retrieval.index", f"ckpt={ckpt}", "kind=ivf", "nlist=2", "nprobe=2", "data=shopee",
                f"data.path={csv}", f"hydra.run.dir={out}", f"paths.cache_dir={cache}", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    cat = read_shopee(csv)
    index = faiss.read_index(str(out / "index.faiss"))
    assert index.ntotal == len(cat) and (out / "index.ids.txt").read_text().split() == cat.ids
    assert list(cache.glob("retrieval/emb/*.npy"))  # the embedding cache was written
    # row i of the index is posting i: its own embedding finds it first, at cosine 1 (nprobe = nlist: exact)
    emb = embed_catalog(load_module(ckpt), cat, range(len(cat)))
    d, ids = index.search(np.stack([emb[i] for i in range(len(cat))]), 1)
    assert np.allclose(d[:, 0], 1.0, atol=1e-4)
    assert (ids[:, 0] == np.arange(len(cat))).mean() >= 0.95  # ties only between identical postings


def test_match_cli_writes_submission_with_self_and_at_least_two(trained, tmp_path):
    from common.metrics.retrieval import shopee_f1
    from retrieval.data import read_shopee

    csv = _products(trained)
    out = tmp_path / "match"
    r = run_cli("-m", "retrieval.match", f"ckpt={_ckpt(trained)}", f"input={csv}", f"tune_on={csv}", "at_least=2",
                "index=hnsw", f"hydra.run.dir={out}", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = (out / "submission.csv").read_text().splitlines()
    assert lines[0] == "posting_id,matches"
    matches = {pid: m.split() for pid, m in (ln.split(",") for ln in lines[1:])}
    cat = read_shopee(csv)
    assert list(matches) == cat.ids
    assert all(m[0] == pid and len(m) >= 2 and len(set(m)) == len(m) for pid, m in matches.items())
    printed = [ln for ln in r.stdout.splitlines() if ln.startswith("shopee F1: ")]
    assert printed and float(printed[0].split(": ")[1]) == pytest.approx(
        shopee_f1(matches, dict(zip(cat.ids, cat.groups, strict=True))), abs=1e-4)
