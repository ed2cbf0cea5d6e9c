import numpy as np
import pytest
from sklearn.metrics import f1_score

from common.metrics import retrieval as R

GROUPS = {"a": 1, "b": 1, "c": 1, "d": 2}
MATCHES = {"a": ["a", "b"], "b": ["b", "a", "c"], "c": ["c", "d"], "d": ["d"]}


def test_shopee_f1_worked_example():
    # a: 2*2/(3+2)=0.8, b: 1.0, c: 2*1/(3+2)=0.4, d: 1.0 -> mean 0.8
    assert R.shopee_f1(MATCHES, GROUPS) == pytest.approx(0.8)


def test_shopee_f1_self_match_counts_and_missing_prediction_scores_zero():
    assert R.shopee_f1({"d": ["d"]}, {"d": 2}) == 1.0
    assert R.shopee_f1({}, {"d": 2}) == 0.0
    # predicting only yourself in a group of three: 2*1/(3+1)
    assert R.shopee_f1({"a": ["a"]}, {"a": 1, "b": 1, "c": 1}) == pytest.approx((0.5 + 0 + 0) / 3)


def test_shopee_f1_equals_sklearn_per_posting():
    rng = np.random.default_rng(1)
    ids = [f"p{i}" for i in range(30)]
    groups = {p: int(rng.integers(0, 8)) for p in ids}
    matches = {p: list(rng.choice(ids, size=int(rng.integers(1, 6)), replace=False)) for p in ids}
    ref = []
    for p in ids:
        truth = np.array([groups[q] == groups[p] for q in ids])
        pred = np.array([q in matches[p] for q in ids])
        ref.append(f1_score(truth, pred))
    assert R.shopee_f1(matches, groups) == pytest.approx(np.mean(ref))


SCORES = np.array([[0.9, 0.8, 0.1], [0.2, 0.3, 0.7]])
RELEVANT = np.array([[0, 1, 1], [1, 0, 0]], dtype=bool)


def test_ranking_metrics_on_hand_computed_case():
    assert R.recall_at_k(SCORES, RELEVANT, 1) == 0.0
    assert R.recall_at_k(SCORES, RELEVANT, 2) == pytest.approx(0.25)
    assert R.recall_at_k(SCORES, RELEVANT, 3) == pytest.approx(1.0)
    assert R.mrr(SCORES, RELEVANT) == pytest.approx(5 / 12)
    assert R.map_at_k(SCORES, RELEVANT, 3) == pytest.approx(11 / 24)


def test_ranked_recall_matches_dense_recall():
    rng = np.random.default_rng(2)
    scores = rng.random((20, 40))
    rel = rng.random((20, 40)) < 0.1
    ranked = np.argsort(-scores, axis=1)
    relevant = [set(np.flatnonzero(r)) for r in rel]
    for k in (1, 5, 10):
        assert R.ranked_recall_at_k(ranked, relevant, k) == pytest.approx(R.recall_at_k(scores, rel, k), abs=1e-6)


def test_pair_prf():
    m = R.pair_prf([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert (m.precision, m.recall, m.f1, m.support) == pytest.approx((2 / 3, 2 / 3, 2 / 3, 3))
