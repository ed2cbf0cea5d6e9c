"""``python -m retrieval.eval ckpt=<model.ckpt> data=deepmatcher data.path=<folder>``: score a saved matcher
on any data set it never saw (a DeepMatcher folder, a Shopee CSV, the synthetic set).

Without ``ckpt`` (``ckpt=null``, the default) the matcher is zero-shot: the towers of the ``model`` node
(``conf/retrieval/model/zero_shot.yaml``) built untrained from config alone, e.g.
``model.image.arch=local-dir:/models/siglip`` or ``model.image.arch=timm:resnet50``. ``query_tower`` /
``gallery_tower`` (``text`` | ``image`` | ``fused``) embed the two sides with different towers: with
``model.text=open_clip``, ``query_tower=text gallery_tower=image`` searches the image gallery with text queries
(one open_clip model, one embedding space).

``split=all`` (default) uses the whole folder: every tableA record with a match is a query against all of
tableB, the Shopee F1 pool is both sides of every match. ``split=test`` uses the data config's group split.
The threshold is the checkpoint's (tuned on its own validation split) unless ``threshold=`` is given; the
best-threshold F1 on this data is reported beside it as ``f1_oracle`` (an upper bound, not a result).
Writes metrics.json, predictions.csv and the plots to the run dir and logs them to MLflow.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from common import entry, eval_cli, io, tracking
from common.config import validate
from common.data.fingerprint import fingerprint
from common.errors import ConfigError
from common.metrics.retrieval import pair_prf
from retrieval.build import check_zero_shot, data_config, zero_shot_module
from retrieval.data import DataConfig, all_split, load_catalog, make_splits, read_pairs
from retrieval.embed import cached_embed, embed_catalog, load_module, tower_dim
from retrieval.module import write_outputs
from retrieval.schemas import ModelConfig
from retrieval.scoring import best_threshold, score_split

log = logging.getLogger(__name__)


def pair_scores_from_files(folder: Path, cat, emb: dict[int, np.ndarray], threshold: float) -> dict:
    """Pair P/R/F1 on a DeepMatcher labelled pair file (``test.csv`` with tableA/B ids) at ``threshold``."""

    f = folder / "test.csv"
    if not f.exists():
        return {}
    pairs = read_pairs(f)
    ok = [(a, b, y) for a, b, y in pairs if f"a:{a}" in cat.index and f"b:{b}" in cat.index]
    s = np.array([float(emb[cat.index[f"a:{a}"]] @ emb[cat.index[f"b:{b}"]]) for a, b, _ in ok])
    prf = pair_prf([y for *_, y in ok], (s >= threshold).astype(int))
    return {"pair_precision": prf.precision, "pair_recall": prf.recall, "pair_f1": prf.f1}


def embed_sides(module, cat, need, towers: tuple) -> dict[int, np.ndarray]:
    """Embed ``need``: query-side records (``a``: tableA, the queries file) with ``towers[0]``, gallery-side ones
    (``b``) with ``towers[1]`` (null: the model's fused embedding), e.g. text queries against an image gallery
    of one open_clip model. Not cached: a zero-shot tower has no checkpoint file to key the cache on."""
    q_tower, g_tower = towers
    if q_tower == g_tower:
        return embed_catalog(module, cat, need, tower=q_tower)
    if not set(cat.side) <= {"a", "b"}:
        raise ConfigError("query_tower / gallery_tower: differ only on data with query and gallery sides "
                          "(data=query_gallery or data=deepmatcher)")
    dq, dg = tower_dim(module, q_tower), tower_dim(module, g_tower)
    if dq != dg:
        raise ConfigError(f"query_tower / gallery_tower: {q_tower or 'fused'} embeds in {dq} dimensions, "
                          f"{g_tower or 'fused'} in {dg}: not one space")
    log.info("query side embedded by the %s tower, gallery side by the %s tower", q_tower or "fused", g_tower or "fused")
    need = np.asarray(need)
    side = np.asarray(cat.side)[need]
    emb = embed_catalog(module, cat, need[side == "a"], tower=q_tower)
    emb.update(embed_catalog(module, cat, need[side == "b"], tower=g_tower))
    return emb


@entry.main("retrieval", config_name="eval")
def main(cfg):
    zero_shot = cfg.ckpt is None
    if zero_shot:
        check_zero_shot(cfg)
    validate(cfg, {"data": DataConfig, **({"model": ModelConfig} if zero_shot else {})})
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    module = zero_shot_module(cfg) if zero_shot else load_module(cfg.ckpt)
    towers = (cfg.get("query_tower"), cfg.get("gallery_tower"))
    dcfg = data_config(cfg.data)
    cat, _ = load_catalog(dcfg)
    split = all_split(cat) if cfg.split == "all" else make_splits(cat, list(dcfg.split), dcfg.seed)[cfg.split]
    fp = fingerprint(zip(cat.ids, cat.titles, cat.groups, strict=True))
    need = np.unique(np.concatenate([split.queries, split.gallery, split.pool]))
    if dcfg.source == "deepmatcher":  # labelled pairs may name any record of either table
        need = np.arange(len(cat))
    emb = embed_sides(module, cat, need, towers) if zero_shot or any(towers) else \
        cached_embed(module, cfg.ckpt, cat, need, cfg.paths.cache_dir, fp)
    thr = float(module.threshold) if cfg.threshold is None else float(cfg.threshold)
    at_least = int(cfg.at_least)
    metrics, curve = score_split(emb, split, cat, "", thr, at_least)
    metrics["f1_oracle"], metrics["threshold_oracle"] = best_threshold(curve)[1], best_threshold(curve)[0]
    if dcfg.source == "deepmatcher":
        metrics.update(pair_scores_from_files(Path(dcfg.path), cat, emb, thr))
    metrics = {f"eval/{k}": float(v) for k, v in metrics.items()}
    with eval_cli.tracked_run(cfg, tags={"data_fingerprint": fp}) as loggers:
        for lg in loggers:
            lg.log_hyperparams({"ckpt": str(cfg.ckpt), "data.path": str(dcfg.path), "data.source": dcfg.source,
                                "split": cfg.split, "query_tower": str(towers[0]), "gallery_tower": str(towers[1]),
                                **({"model.image.arch": str(cfg.model.image.arch)}
                                   if zero_shot and cfg.model.get("image") is not None else {})})
            lg.log_metrics(metrics)
        io.write_json(out / "metrics.json", metrics)
        tracking.log_artifact(loggers, out / "metrics.json")
        write_outputs(emb, split, cat, thr, at_least, out, loggers, curves={cfg.split: curve})
    for k, v in metrics.items():
        print(f"{k}: {v:.4f}")
    print(f"outputs in {out}")
    log.info("config: %s", OmegaConf.to_yaml(cfg.data))


if __name__ == "__main__":
    main()
