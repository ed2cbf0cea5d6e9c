"""``python -m retrieval.mine``: hard-negative mining compatible with FlagEmbedding's ``hn_mine``.

Input: FlagEmbedding JSONL ``{query, pos: [...], neg: [...]}`` (``input_file``), or a DeepMatcher folder's
training split (``data=deepmatcher data.path=...``: query = tableA title, pos = its tableB match). The
candidate pool is ``candidate_pool`` (JSONL ``{"text": ...}`` per line, or the DeepMatcher tableB), else every
pos/neg text of the input. For each query the candidates ranked ``range_for_sampling`` (``"2-200"``: ranks
2..200, 1-based as in FlagEmbedding) are kept, positives and the query itself are removed, candidates
scoring above ``score_ceiling`` (likely unlabelled duplicates) are dropped, and ``negative_number`` are
sampled. Output: the same JSONL with ``neg`` replaced, written atomically.
"""

from __future__ import annotations

import logging

import numpy as np

from common import entry, io
from common.data.records import read_jsonl
from common.errors import ConfigError
from retrieval.build import data_config
from retrieval.data import load_catalog, make_splits, read_flag_jsonl
from retrieval.embed import load_module
from retrieval.models.text import TextTower
from retrieval.negatives import mine_texts

log = logging.getLogger(__name__)


def parse_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in str(text).split("-"))
    except ValueError:
        raise ConfigError(f"range_for_sampling: expected 'LO-HI' like '2-200', got {text!r}") from None
    if lo < 1 or hi < lo:
        raise ConfigError(f"range_for_sampling: need 1 <= LO <= HI, got {text!r}")
    return lo, hi


def encoder_from_cfg(cfg):
    """A text encoder ``list[str] -> np.ndarray`` from ``ckpt`` (a trained matcher) or ``text`` (a tower)."""
    import torch

    if cfg.get("ckpt"):
        tower = load_module(cfg.ckpt).net.text
        if tower is None:
            raise ConfigError("ckpt: this model has no text tower to mine with")
    else:
        tower = TextTower(**cfg.text)
    tower.eval()

    @torch.no_grad()
    def encode(texts: list[str]) -> np.ndarray:
        from tqdm import tqdm

        bs = int(cfg.get("batch_size", 128))
        out = [tower(texts[i : i + bs]).numpy() for i in tqdm(range(0, len(texts), bs), desc="embedding", leave=False)]
        return np.concatenate(out).astype(np.float32)

    return encode


def flag_rows_from_deepmatcher(cat, split) -> tuple[list[dict], list[str]]:
    """Training rows ``{query: A title, pos: [B titles]}`` and the pool (all B titles) of a DeepMatcher split."""
    by_group: dict[str, list[int]] = {}
    for i in split.gallery:
        by_group.setdefault(cat.groups[i], []).append(int(i))
    rows = [{"query": cat.titles[q], "pos": [cat.titles[j] for j in by_group.get(cat.groups[q], [])], "neg": []}
            for q in split.queries if by_group.get(cat.groups[q])]
    return rows, [cat.titles[i] for i in split.gallery]


@entry.main("retrieval", config_name="mine")
def main(cfg):
    window = parse_range(cfg.range_for_sampling)  # config and output path first: no model loads for a typo
    out = io.check_writable(cfg.output_file, "output_file", {"input_file": cfg.input_file,
                                                             "candidate_pool": cfg.candidate_pool,
                                                             "ckpt": cfg.get("ckpt")})
    if cfg.input_file:
        rows = read_flag_jsonl(cfg.input_file)
        if cfg.candidate_pool:
            pool = [r["text"] for r in read_jsonl(cfg.candidate_pool, lambda r: {"text": str(r["text"])})]
        else:
            pool = [t for r in rows for t in [*r["pos"], *r["neg"]]]
    elif cfg.data and cfg.data.get("path"):
        dcfg = data_config(cfg.data)
        cat, _ = load_catalog(dcfg)
        if not any(cat.side):
            raise ConfigError("data: mining from data needs a DeepMatcher folder (data=deepmatcher data.path=...)")
        rows, pool = flag_rows_from_deepmatcher(cat, make_splits(cat, list(dcfg.split), dcfg.seed)["train"])
    else:
        raise ConfigError("input_file: give a FlagEmbedding JSONL, or data=deepmatcher data.path=<folder>")
    mined = mine_texts(rows, pool, encoder_from_cfg(cfg), range_for_sampling=window,
                       negative_number=int(cfg.negative_number), score_ceiling=cfg.score_ceiling, seed=int(cfg.seed))
    io.write_jsonl(out, mined)
    print(f"wrote {len(mined)} rows with {cfg.negative_number} negatives each to {out}")


if __name__ == "__main__":
    main()
