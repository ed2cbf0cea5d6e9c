"""The command lines a user runs: bad input ends in one clear line; eval runs a saved model on unseen tables."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.retrieval.test_data import _deepmatcher, _shopee


def test_train_bad_csv_one_line_exit_2(tmp_path):
    f = _shopee(tmp_path, "p1,a.png,ff,T,g1\np1,b.png,ff,U,g1\n")
    r = run_cli("-m", "retrieval.train", "data=shopee", f"data.path={f}", "logger=none",
                f"paths.log_dir={tmp_path / 'logs'}", timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    err = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and f"{f}:3: duplicate posting_id 'p1'" in err[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_checkpoint_reload_keeps_threshold(trained):
    from retrieval.embed import load_module

    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    best = sorted((trained["out"] / "checkpoints").glob("epoch_*.ckpt"))[-1]
    assert float(load_module(best).threshold) == pytest.approx(metrics["test/threshold"])


def test_eval_runs_saved_model_on_unseen_deepmatcher_folder(trained, tmp_path, mlflow_uri):
    folder = _deepmatcher(tmp_path)
    ckpt = sorted((trained["out"] / "checkpoints").glob("epoch_*.ckpt"))[-1]
    out = tmp_path / "eval"
    r = run_cli("-m", "retrieval.eval", f"ckpt={ckpt}", f"data.path={folder}", f"hydra.run.dir={out}",
                f"paths.cache_dir={tmp_path / 'cache'}", f"logger.mlflow.tracking_uri={mlflow_uri}",
                f"logger.mlflow.artifact_location={tmp_path / 'art'}", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    for key in ("eval/recall_at_1", "eval/recall_at_10", "eval/mrr", "eval/map_at_10", "eval/f1", "eval/f1_oracle"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["eval/recall_at_10"] == 1.0  # 3 gallery records: every match is in the top 10
    assert (out / "predictions.csv").read_text().startswith("posting_id,matches\n")
    assert (out / "retrieval_grid.png").is_file() and (out / "threshold_f1.png").is_file()
