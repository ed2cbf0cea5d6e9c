"""The cross-encoder reranker end to end: trained through the real ``+exp=reranker`` config on a hand-made
DeepMatcher folder (Ditto pair splits), then used by ``retrieval.match reranker=...`` on the session's
bi-encoder.

A 1-layer, 32-wide cross-encoder trained from scratch for a few seconds does not learn to match product codes
(measured with this folder: test pair F1 0.18-0.48 for lr 1e-4..3e-2 and 2-10 epochs, about chance; its logits
barely depend on the input, std 1e-5..1e-2), and MiniLM took 27 s for test F1 0.40. So these tests pin what
must hold anyway: the checkpoint keeps the validation-tuned threshold that the test metrics were taken at, and
``retrieval.match`` keeps exactly the neighbours whose logit passes the checkpoint's threshold.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tests.reliability.harness import call
from tests.retrieval.conftest import compose_cfg
from tests.retrieval.test_index_match import _ckpt, _products

BRANDS = ["Sony", "Bose", "Canon", "Nikon", "Philips", "Logitech"]
KINDS = [("turntable", "record player"), ("speaker", "loudspeaker"), ("camera", "digital camera"),
         ("headphones", "over-ear headset"), ("keyboard", "wireless keyboard"), ("monitor", "lcd display")]
TINY_RERANKER = ["+exp=reranker", "model.reranker.name_or_path=null", "+model.reranker.hidden_size=32",
                 "+model.reranker.num_layers=1", "+model.reranker.num_heads=2", "model.reranker.max_length=32",
                 "optim.lr=0.003", "data.batch_size=16", "trainer.max_epochs=2", "callbacks.early_stopping=null",
                 "callbacks.progress_bar=null", "logger=none"]


def write_pair_folder(root: Path, n: int = 36, seed: int = 0) -> Path:
    """A DeepMatcher folder of ``n`` products (``tableA``: "Sony Turntable NP141M", ``tableB``: "sony NP-141M
    record player") with Ditto ``train/valid/test.txt``: per product its positive and 3 negatives drawn from
    the same part, the parts disjoint by product (20/8/8 for n=36)."""
    rng = random.Random(seed)
    products = []
    for i in range(n):
        brand, (kind, synonym) = BRANDS[i % 6], KINDS[(i // 6) % 6]
        code = "".join(rng.choice("ABCDEFGHJKLMNPRSTVWXZ") for _ in range(2)) + f"{rng.randint(100, 999)}{rng.choice('HKMSX')}"
        products.append((f"{brand} {kind.title()} {code}", f"{brand.lower()} {code[:2]}-{code[2:]} {synonym}"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "tableA.csv").write_text("id,name\n" + "".join(f"{i},{a}\n" for i, (a, _) in enumerate(products)), encoding="utf-8")
    (root / "tableB.csv").write_text("id,name\n" + "".join(f"{100 + i},{b}\n" for i, (_, b) in enumerate(products)), encoding="utf-8")
    cell = lambda text: f"COL name VAL {text}"  # noqa: E731
    n_train, n_valid = n * 5 // 9, n * 2 // 9
    parts = {"train.txt": range(n_train), "valid.txt": range(n_train, n_train + n_valid), "test.txt": range(n_train + n_valid, n)}
    for name, idx in parts.items():
        lines = []
        for i in idx:
            lines.append(f"{cell(products[i][0])}\t{cell(products[i][1])}\t1\n")
            lines += [f"{cell(products[i][0])}\t{cell(products[j][1])}\t0\n" for j in rng.sample([j for j in idx if j != i], 3)]
        (root / name).write_text("".join(lines), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    """A tiny reranker trained by ``run.train`` on the composed ``+exp=reranker`` config (a few seconds)."""
    from hydra.core.global_hydra import GlobalHydra

    from common import run
    from retrieval.build import SCHEMAS, build

    tmp = tmp_path_factory.mktemp("reranker")
    folder = write_pair_folder(tmp / "dm")
    cfg = compose_cfg(tmp, None, *TINY_RERANKER, f"data.path={folder}")
    run.train(cfg, build=build, schemas=SCHEMAS)
    GlobalHydra.instance().clear()
    out = Path(cfg.paths.output_dir)
    return {"folder": folder, "out": out, "ckpt": sorted((out / "checkpoints").glob("epoch_*.ckpt"))[-1]}


def test_reranker_trains_and_its_checkpoint_keeps_the_threshold_the_test_used(reranker):
    from common.checkpoints import load_module
    from common.metrics.retrieval import pair_prf
    from retrieval.rerank import PairDataModule, RerankerModule, best_pair_threshold

    metrics = json.loads((reranker["out"] / "metrics.json").read_text())
    assert 0.0 <= metrics["test/pair_f1"] <= 1.0 and "val/pair_f1" in metrics
    module = load_module(RerankerModule, reranker["ckpt"])
    assert module.hparams.encoder["hidden_size"] == 32  # the tiny overrides reached the model
    pairs = PairDataModule(str(reranker["folder"]), ["name"])
    valid = np.array([y for *_, y in pairs.val_pairs])
    assert len(pairs.test_pairs) == 32 and valid.sum() == 8  # Ditto lines read, ``name`` serialised
    # the threshold in the checkpoint is the best-F1 one on validation, and the one test/pair_f1 was taken at
    scores = module.score([a for a, _, _ in pairs.val_pairs], [b for _, b, _ in pairs.val_pairs])
    assert float(module.threshold) == np.float32(best_pair_threshold(scores, valid)[0])  # same pairs, same batch: exact
    test_scores = module.score([a for a, _, _ in pairs.test_pairs], [b for _, b, _ in pairs.test_pairs])
    labels = np.array([y for *_, y in pairs.test_pairs])
    assert pair_prf(labels, (test_scores >= float(module.threshold)).astype(int)).f1 == pytest.approx(metrics["test/pair_f1"], abs=1e-6)


def test_reranked_matches_keep_passing_candidates_by_logit_and_top_up():
    from retrieval.match import rerank_candidates, reranked_matches

    nn = np.array([[0, 1, 2, 3], [0, 1, 2, 3], [2, 3, -1, -1], [3, 2, 1, 0]])
    cand = rerank_candidates(nn, 2)
    assert cand == [[1, 2], [0, 2], [3], [2, 1]]  # self left out wherever it ranks; -1 padding dropped
    logits = [np.array([0.5, 2.0]), np.array([-1.0, -3.0]), np.array([1.0]), np.array([-2.0, -0.5])]
    ids = ["a", "b", "c", "d"]
    assert reranked_matches(ids, cand, logits, 0.0) == {"a": ["a", "c", "b"], "b": ["b"], "c": ["c", "d"], "d": ["d"]}
    two = reranked_matches(ids, cand, logits, 0.0, at_least=2)
    assert two["b"] == ["b", "a"] and two["d"] == ["d", "b"]  # the highest logit, not the bi-encoder's first


def test_match_with_reranker_keeps_exactly_the_neighbours_over_its_threshold(trained, reranker, tmp_path):
    """The tiny reranker's own threshold lets nearly every Shopee neighbour through, so the test moves it (in a
    copy of the checkpoint) into the widest gap among the middle logits: about half pass. The logits recomputed
    here are bit-identical to the CLI's (same pairs, same batches), so a gap of a few float32 steps is enough."""
    import torch

    from common.checkpoints import load_module
    from retrieval.data import read_shopee
    from retrieval.embed import embed_catalog
    from retrieval.embed import load_module as load_bi_encoder
    from retrieval.knn import build_index, search
    from retrieval.rerank import RerankerModule, rerank_scores

    csv, k = _products(trained), 5
    cat = read_shopee(csv)
    # the bi-encoder's top-k other postings and their cross-encoder logits, computed here independently
    emb = embed_catalog(load_bi_encoder(_ckpt(trained)), cat, range(len(cat)))
    x = np.stack([emb[i] for i in range(len(cat))])
    _, nn = search(build_index(x, "flat"), x, k + 1)
    cand = [[cat.ids[j] for j in row if j != i][:k] for i, row in enumerate(nn)]
    title = dict(zip(cat.ids, cat.titles, strict=True))
    logits = rerank_scores(load_module(RerankerModule, reranker["ckpt"]), list(cat.titles), [[title[c] for c in cs] for cs in cand])
    u = np.unique(np.concatenate(logits))
    mid = u[len(u) // 5 : 4 * len(u) // 5 + 1]
    gap = int(np.argmax(np.diff(mid)))
    thr = float(np.float32((mid[gap] + mid[gap + 1]) / 2))
    assert mid[gap + 1] - mid[gap] > 4 * np.spacing(np.abs(mid[gap]))
    assert mid[gap] < thr < mid[gap + 1]
    state = torch.load(reranker["ckpt"], map_location="cpu", weights_only=True)
    state["state_dict"]["threshold"] = torch.tensor(thr)
    ckpt = tmp_path / "reranker_moved.ckpt"
    torch.save(state, ckpt)

    ended = call("retrieval.match", f"ckpt={_ckpt(trained)}", f"input={csv}", f"reranker={ckpt}", f"rerank_k={k}",
                 "at_least=2", f"hydra.run.dir={tmp_path / 'match'}", f"paths.log_dir={tmp_path / 'logs'}")
    assert ended.code == 0, ended.stderr[-3000:]
    used = [ln for ln in ended.stdout.splitlines() if ln.startswith("reranker ")]
    assert len(used) == 1 and f"top {k} neighbours, threshold {thr:.4f}" in used[0], ended.stdout
    lines = (tmp_path / "match" / "submission.csv").read_text().splitlines()
    assert lines[0] == "posting_id,matches"
    matches = {pid: m.split() for pid, m in (ln.split(",") for ln in lines[1:])}
    assert list(matches) == cat.ids
    assert all(m[0] == pid and 2 <= len(m) <= k + 1 and len(set(m)) == len(m) for pid, m in matches.items())
    # self, then the candidates at or over the checkpoint's threshold by logit; else (at_least=2) the best one
    passed = topped_up = 0
    for pid, cs, s in zip(cat.ids, cand, logits, strict=True):
        by_logit = [cs[i] for i in np.argsort(-s, kind="stable")]
        keep = [c for c in by_logit if s[cs.index(c)] >= thr]
        assert matches[pid] == [pid, *(keep or by_logit[:1])], (pid, cs, s)
        passed += len(keep)
        topped_up += not keep
    assert 0.2 < passed / (k * len(cat)) < 0.8 and topped_up < len(cat)


def test_match_with_a_bad_reranker_is_one_error_line(trained, tmp_path):
    ckpt, csv = _ckpt(trained), _products(trained)
    for bad, line in ((tmp_path / "none.ckpt", f"error: reranker: no checkpoint file at {tmp_path / 'none.ckpt'}"),
                      (ckpt, f"error: reranker: {ckpt} is not a readable RerankerModule checkpoint (")):  # a bi-encoder's
        ended = call("retrieval.match", f"ckpt={ckpt}", f"input={csv}", f"reranker={bad}", f"hydra.run.dir={tmp_path / 'run'}",
                     f"paths.log_dir={tmp_path / 'logs'}")
        assert ended.code == 2 and "Traceback" not in ended.stderr, ended.stderr[-3000:]
        assert len(ended.error_lines) == 1 and ended.error_lines[0].startswith(line), ended.stderr
        assert not (tmp_path / "run" / "submission.csv").exists()
