"""Figures: Shopee F1 against the similarity threshold, and a grid of queries with their top matches."""

from __future__ import annotations

import textwrap
import warnings

import numpy as np

from common.data.images import load_image


def threshold_curve(curves: dict[str, list[tuple[float, float]]], chosen: float):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, curve in curves.items():
        t, f = zip(*curve, strict=True)
        ax.plot(t, f, label=name)
    ax.axvline(chosen, color="grey", ls="--", label=f"threshold {chosen:.2f}")
    ax.set_xlabel("cosine similarity threshold")
    ax.set_ylabel("Shopee F1")
    ax.legend()
    fig.tight_layout()
    return fig


def retrieval_grid(q_emb, g_emb, split, cat, n_queries: int = 6, k: int = 5, seed: int = 0):
    """Each row: a query then its top-k gallery items, framed green when they match, red when not."""
    import matplotlib.pyplot as plt


    rel = split.relevant(cat)
    rows = [i for i, r in enumerate(rel) if r]
    rows = list(np.random.default_rng(seed).choice(rows, size=min(n_queries, len(rows)), replace=False))
    scores = q_emb[rows] @ g_emb.T
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(2 * (k + 1), 2.2 * len(rows)), squeeze=False)
    for r, qi in enumerate(rows):
        qid = int(split.queries[qi])
        s = scores[r].copy()
        own = np.flatnonzero(split.gallery == qid)
        s[own] = -np.inf
        top = np.argsort(-s)[:k]
        cells = [(qid, "query", "black")] + [
            (int(split.gallery[j]), f"{s[j]:.2f}", "green" if j in rel[qi] else "red") for j in top]
        for c, (item, label, colour) in enumerate(cells):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = cat.images[item]
            if img:
                ax.imshow(load_image(img))
            ax.set_title(label, color=colour, fontsize=8)
            ax.set_xlabel("\n".join(textwrap.wrap(cat.titles[item], 24)[:3]), fontsize=6)
            for sp in ax.spines.values():
                sp.set_edgecolor(colour)
                sp.set_linewidth(3)
    with warnings.catch_warnings():  # CJK glyphs in titles may be missing from the default font
        warnings.simplefilter("ignore")
        fig.tight_layout()
    return fig
