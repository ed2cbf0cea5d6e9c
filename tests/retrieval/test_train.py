"""The default synthetic run learns: test recall@1 and Shopee F1 far above the same towers untrained."""

from __future__ import annotations

import json

import lightning as L
import pytest
from omegaconf import OmegaConf

from retrieval import scoring
from retrieval.build import SCHEMAS, build


@pytest.mark.slow
def test_trained_beats_untrained(trained, mlflow_uri):
    from common.config import validate

    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    cfg = OmegaConf.create(OmegaConf.to_container(trained["cfg"], resolve=True))
    validate(cfg, SCHEMAS)
    L.seed_everything(cfg.seed)
    module, dm = build(cfg)  # same towers, never trained
    val_emb = module.embed_split(dm, "val")
    val, _ = scoring.score_split(val_emb, dm.splits["val"], dm.catalog, "val/")  # threshold tuned on val, as in training
    test, _ = scoring.score_split(module.embed_split(dm, "test"), dm.splits["test"], dm.catalog, "test/",
                                   threshold=val["val/threshold"])
    # groups are pairs here, so predicting only yourself already scores F1 2/3: the room above that is small
    assert metrics["test/recall_at_1"] >= test["test/recall_at_1"] + 0.25, (metrics, test)
    assert metrics["test/f1"] >= test["test/f1"] + 0.05, (metrics, test)
    assert metrics["test/mrr"] >= test["test/mrr"] + 0.2, (metrics, test)


def test_run_outputs_logged(trained):
    out = trained["out"]
    for name in ("metrics.json", "predictions.csv", "threshold_f1.png", "retrieval_grid.png", "threshold_f1.json"):
        assert (out / name).is_file(), name
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0] == "posting_id,matches"
    pid, matches = lines[1].split(",")
    assert pid in matches.split()  # self-match included
    assert list((out / "checkpoints").glob("*.ckpt"))
