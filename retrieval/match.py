"""``python -m retrieval.match ckpt=... input=postings.csv``: kNN matching with a tuned threshold, written as the
Shopee submission ``posting_id,matches`` (space-separated ids, self included).

``input`` is a Shopee CSV (``label_group`` may be absent for unlabelled test data; images under
``image_dir``, default ``<csv dir>/images``). The threshold is ``threshold`` if set, else tuned for F1 on the
labelled ``tune_on`` CSV, else the checkpoint's own (tuned on its validation split). ``at_least=2`` gives every
posting its nearest other posting when nothing passes the threshold. ``index`` picks the FAISS index kind.

Without ``ckpt`` (``ckpt=null``, the default) the towers of the ``model`` node are built untrained from config
alone, as for ``retrieval.eval`` (its threshold: ``threshold=``, ``tune_on``, else the default 0.5).

``reranker=<checkpoint>`` (a :class:`~retrieval.rerank.RerankerModule` trained with ``+exp=reranker`` or
``+exp=matcher``, whose postings are then written ``COL title VAL ...`` as its pairs were) makes
the cross-encoder the judge: each posting's top ``rerank_k`` bi-encoder neighbours (itself left out) are scored
on (posting title, neighbour title), and its matches are itself plus the neighbours whose logit is at least
the reranker's own threshold (tuned on its validation pairs), highest logit first; ``at_least=2`` then adds the
highest-logit neighbour. The bi-encoder's ``threshold`` / ``tune_on`` are not used then.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from common import entry, io
from common.checkpoints import load_module as load
from common.data.records import read_csv, require_text
from common.errors import ConfigError, DataError
from common.metrics.retrieval import shopee_f1
from retrieval.build import zero_shot_unless_ckpt
from retrieval.data import SHOPEE_COLUMNS, Catalog, all_split, read_shopee
from retrieval.embed import embed_catalog, load_module
from retrieval.knn import build_index, search
from retrieval.rerank import RerankerModule, rerank_scores
from retrieval.scoring import best_threshold, f1_curve, matches_at


def read_postings(path, image_dir=None):
    """A Shopee CSV with or without ``label_group`` (unlabelled test postings get their own id as group)."""

    path = Path(path)

    with path.open(encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f), [])
    if "label_group" in header:
        return read_shopee(path, image_dir)
    cols = [c for c in SHOPEE_COLUMNS if c != "label_group"]
    image_dir = Path(image_dir) if image_dir else path.parent / "images"
    def val(r):
        pid = require_text(r["posting_id"], "posting_id")
        img = image_dir / require_text(r["image"], "image")
        if not img.is_file():
            raise ValueError(f"missing image {img}")
        return pid, require_text(r["title"], "title"), str(img)

    rows = read_csv(path, required=cols, allowed=cols, validate=val, unique="posting_id")
    return Catalog([r[0] for r in rows], [r[1] for r in rows], [r[0] for r in rows], [r[2] for r in rows])


def rerank_candidates(nn: np.ndarray, k: int) -> list[list[int]]:
    """Per posting (row), its first ``k`` neighbours other than itself, in bi-encoder order."""
    return [[int(j) for j in row_nn if j >= 0 and j != row][:k] for row, row_nn in enumerate(nn)]


def reranked_matches(ids, candidates: list[list[int]], logits: list[np.ndarray], threshold: float,
                     at_least: int = 1) -> dict[str, list[str]]:
    """Each posting's matches: itself plus the candidates with cross-encoder logit >= ``threshold``, highest
    logit first (ties keep the bi-encoder order); ``at_least`` tops up with the highest-logit others."""
    out = {}
    for row, (cand, s) in enumerate(zip(candidates, logits, strict=True)):
        order = [cand[i] for i in np.argsort(-np.asarray(s), kind="stable")]
        passed = {j for j, v in zip(cand, s, strict=True) if v >= threshold}
        m = [ids[row]] + [ids[j] for j in order if j in passed]
        if len(m) < at_least:
            m += [ids[j] for j in order if j not in passed][: at_least - len(m)]
        out[ids[row]] = m
    return out


def _main(cfg):
    io.check_writable(cfg.output, "output", {k: cfg.get(k) for k in ("input", "tune_on", "ckpt", "reranker")})
    reranker = None
    if cfg.get("reranker"):  # before the bi-encoder: a bad path fails at once
        reranker = load(RerankerModule, cfg.reranker, key="reranker")
        if isinstance(cfg.rerank_k, bool) or not isinstance(cfg.rerank_k, int) or cfg.rerank_k < 1:
            raise ConfigError(f"rerank_k: expected an integer >= 1, got {cfg.rerank_k!r}")
    module = zero_shot_unless_ckpt(cfg) or load_module(cfg.ckpt)
    threshold = cfg.threshold
    if reranker is not None:
        if threshold is not None or cfg.tune_on:
            print("threshold / tune_on are the bi-encoder's: not used with a reranker (it has its own threshold)")
    elif threshold is None and cfg.tune_on:
        tcat = read_postings(cfg.tune_on, cfg.tune_image_dir)
        temb = embed_catalog(module, tcat, range(len(tcat)))
        split = all_split(tcat)
        threshold = best_threshold(f1_curve(np.stack([temb[i] for i in split.pool]), split, tcat, int(cfg.at_least)))[0]
        print(f"threshold tuned on {cfg.tune_on}: {threshold:.2f}")
    if threshold is None and reranker is None:
        threshold = float(module.threshold)
    if not cfg.input:
        raise DataError("input: give the postings CSV to match")
    cat = read_postings(cfg.input, cfg.image_dir)
    emb = embed_catalog(module, cat, range(len(cat)))
    x = np.stack([emb[i] for i in range(len(cat))])
    index = build_index(x, cfg.index)
    if reranker is None:
        s, n = search(index, x, int(cfg.k))
        matches = matches_at(cat.ids, s, n, float(threshold), int(cfg.at_least))
    else:
        rk = int(cfg.rerank_k)
        _, n = search(index, x, rk + 1)  # + the posting itself
        cand = rerank_candidates(n, rk)
        texts = reranker.record_texts([{"title": t} for t in cat.titles])  # a matcher: COL title VAL ...
        logits = rerank_scores(reranker, texts, [[texts[j] for j in c] for c in cand])
        rthr = float(reranker.threshold)
        matches = reranked_matches(cat.ids, cand, logits, rthr, int(cfg.at_least))
        print(f"reranker {cfg.reranker}: cross-encoder on the top {rk} neighbours, threshold {rthr:.4f} (its own)")
    out = Path(cfg.output)
    io.write_text(out, "posting_id,matches\n" + "".join(f"{k},{' '.join(v)}\n" for k, v in matches.items()))
    if reranker is None:
        print(f"threshold {float(threshold):.2f}; wrote {len(matches)} postings to {out}")
    else:
        print(f"wrote {len(matches)} postings to {out}")
    if len(set(cat.groups)) < len(cat):  # labelled input: report the F1 too
        print(f"shopee F1: {shopee_f1(matches, dict(zip(cat.ids, cat.groups, strict=True))):.4f}")


def main():
    return entry.main("retrieval", config_name="match")(_main)()


if __name__ == "__main__":
    main()
