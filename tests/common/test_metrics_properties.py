"""An independent check of every metric in ``common.metrics``: each function against a direct computation from
counts (tp / fp / fn per column, set sizes, ranks), on hundreds of random cases of every shape.

The references below use nothing but numpy and the definitions; they never call scikit-learn or torchmetrics,
so a misread shape in the library layer (scikit-learn taking a one-column indicator for a binary target whose
class values are 0 and 1) cannot hide in both sides at once.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from common.metrics import brand as B
from common.metrics import classification as C
from common.metrics import retrieval as R
from textcls import scores

CASES = settings(max_examples=300, deadline=None)


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def counts(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """tp, fp, fn, tn per column, straight from the definitions."""
    t, p = t.astype(bool), p.astype(bool)
    return (t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0), (~t & ~p).sum(0)


def ref_prf(t, p, average: str, ids: list[int]) -> tuple[float, float, float]:
    tp, fp, fn, _ = (c[ids] for c in counts(t, p))
    if not ids:
        return 0.0, 0.0, 0.0
    if average == "micro":
        a, b, c = tp.sum(), fp.sum(), fn.sum()
        return _div(a, a + b), _div(a, a + c), _div(2 * a, 2 * a + b + c)
    per = [(_div(a, a + b), _div(a, a + c), _div(2 * a, 2 * a + b + c)) for a, b, c in zip(tp, fp, fn, strict=True)]
    return tuple(float(np.mean([row[k] for row in per])) for k in range(3))


@st.composite
def indicator_pair(draw, min_cols: int = 1, max_cols: int = 7):
    """Two equal-shaped 0/1 matrices; density is drawn too, so all-zero columns, rows with no label and empty
    predictions (an all-zero ``y_pred``) all come up often."""
    n = draw(st.integers(1, 40))
    width = draw(st.integers(min_cols, max_cols))
    shape = (n, width)
    dens_t, dens_p = draw(st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0])), draw(st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]))
    u_t = draw(arrays(np.float64, shape, elements=st.floats(0, 1, exclude_max=True)))
    u_p = draw(arrays(np.float64, shape, elements=st.floats(0, 1, exclude_max=True)))
    return (u_t < dens_t).astype(int), (u_p < dens_p).astype(int)


@st.composite
def onehot_pair(draw):
    """Multiclass: one-hot rows, classes that may never occur."""
    n, k = draw(st.integers(1, 40)), draw(st.integers(2, 6))
    yt = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    yp = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    return C.to_indicator(yt, k), C.to_indicator(yp, k)


def _names(width: int) -> list[str]:
    return [f"L{j}" for j in range(width)]


@CASES
@given(indicator_pair(), st.sampled_from(["micro", "macro"]), st.data())
def test_prf_equals_counts_for_every_shape_and_exclusion(pair, average, data):
    t, p = pair
    names = _names(t.shape[1])
    exclude = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=t.shape[1]))
    ids = [j for j, name in enumerate(names) if name not in exclude]
    m = C.prf(t, p, average, names, exclude)
    assert (m.precision, m.recall, m.f1) == pytest.approx(ref_prf(t, p, average, ids))
    assert m.support == int(t[:, ids].sum())


@CASES
@given(indicator_pair())
def test_per_label_rows_are_each_columns_own_counts(pair):
    t, p = pair
    tp, fp, fn, _ = counts(t, p)
    rows = C.per_label(t, p, _names(t.shape[1]))
    assert [r.label for r in rows] == _names(t.shape[1])
    for j, r in enumerate(rows):
        assert (r.right, r.predict, r.standard) == (tp[j], tp[j] + fp[j], tp[j] + fn[j])
        assert (r.precision, r.recall, r.f1) == pytest.approx(ref_prf(t, p, "micro", [j]))


@CASES
@given(indicator_pair())
def test_confusion_is_tn_fp_fn_tp_of_each_column(pair):
    t, p = pair
    tp, fp, fn, tn = counts(t, p)
    assert C.confusion(t, p).tolist() == [[[a, b], [c, d]] for a, b, c, d in zip(tn, fp, fn, tp, strict=True)]


@CASES
@given(indicator_pair(), st.data())
def test_neuralclassifier_line_from_counts(pair, data):
    t, p = pair
    names = _names(t.shape[1])
    exclude = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=t.shape[1]))
    ids = [j for j, name in enumerate(names) if name not in exclude]
    tp, fp, fn, _ = (c[ids] for c in counts(t, p))
    P, Rc, F = ref_prf(t, p, "micro", ids)
    assert C.neuralclassifier_line(t, p, names, exclude) == (
        f"precision: {P:.6f}, recall: {Rc:.6f}, fscore: {F:.6f}, "
        f"right: {tp.sum()}, predict: {(tp + fp).sum()}, standard: {(tp + fn).sum()}"
    )


@CASES
@given(onehot_pair())
def test_multiclass_accuracy_is_micro_f1_and_macro_from_counts(pair):
    t, p = pair
    m = scores.metrics(t, p, "multiclass", _names(t.shape[1]), [-1] * t.shape[1])
    acc = float((t.argmax(1) == p.argmax(1)).mean())
    assert m["acc"] == pytest.approx(acc) and m["micro_f1"] == pytest.approx(acc)
    assert m["macro_f1"] == pytest.approx(ref_prf(t, p, "macro", list(range(t.shape[1])))[2])


@CASES
@given(indicator_pair(max_cols=1))
def test_binary_task_reports_the_positive_column(pair):
    t, p = pair
    m = scores.metrics(t, p, "binary", ["pos"], [-1])
    tp, fp, fn, _ = (int(c[0]) for c in counts(t, p))
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((_div(tp, tp + fp), _div(tp, tp + fn), _div(2 * tp, 2 * tp + fp + fn)))


@CASES
@given(indicator_pair(min_cols=2, max_cols=6), st.data())
def test_hierarchical_gate_and_subtag_scores_from_counts(pair, data):
    t, p = pair
    width = t.shape[1]
    n_roots = data.draw(st.integers(1, width - 1))
    parents = [-1] * n_roots + [data.draw(st.integers(0, n_roots - 1)) for _ in range(width - n_roots)]
    m = scores.metrics(t, p, "hierarchical", _names(width), parents)
    roots, subs = list(range(n_roots)), list(range(n_roots, width))
    assert m["gate_f1"] == pytest.approx(ref_prf(t, p, "micro", roots)[2])
    assert m["sub_micro_f1"] == pytest.approx(ref_prf(t, p, "micro", subs)[2])
    assert m["sub_macro_f1"] == pytest.approx(ref_prf(t, p, "macro", subs)[2])


def test_the_eight_row_binary_case_is_the_positive_class():
    """The reported defect: one column, TP=1 FP=1 FN=1 -> P = R = F1 = 0.5 (it used to say 0.833, the negatives)."""
    y_true = [[1], [1], [0], [0], [0], [0], [0], [0]]
    y_pred = [[1], [0], [1], [0], [0], [0], [0], [0]]
    m = C.prf(y_true, y_pred)
    assert (m.precision, m.recall, m.f1, m.support) == (0.5, 0.5, 0.5, 2)
    assert C.neuralclassifier_line(y_true, y_pred) == (
        "precision: 0.500000, recall: 0.500000, fscore: 0.500000, right: 1, predict: 2, standard: 2"
    )
    (row,) = C.per_label(y_true, y_pred, ["news_car"])
    assert (row.precision, row.recall, row.f1, row.right, row.predict, row.standard) == (0.5, 0.5, 0.5, 1, 2, 2)
    assert scores.metrics(np.array(y_true), np.array(y_pred), "binary", ["news_car"], [-1])["f1"] == 0.5


# ------------------------------------------------------------------------------------------------ retrieval


@CASES
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=50))
def test_pair_prf_from_counts(pairs):
    t = np.array([a for a, _ in pairs])[:, None]
    p = np.array([b for _, b in pairs])[:, None]
    m = R.pair_prf(t[:, 0], p[:, 0])
    assert (m.precision, m.recall, m.f1) == pytest.approx(ref_prf(t, p, "micro", [0]))
    assert m.support == int(t.sum())


@st.composite
def scored_relevance(draw):
    """A score matrix without ties (so the ranking is defined) and a relevance matrix with empty rows too."""
    nq, ng = draw(st.integers(1, 8)), draw(st.integers(1, 12))
    perm = draw(st.permutations(list(range(nq * ng))))
    scores_ = np.array(perm, dtype=np.float64).reshape(nq, ng) / (nq * ng)
    rel = draw(arrays(np.bool_, (nq, ng)))
    return scores_, rel


def _ranks(scores_: np.ndarray) -> np.ndarray:
    return np.argsort(-scores_, axis=1)


@CASES
@given(scored_relevance(), st.integers(1, 12))
def test_recall_at_k_mrr_map_from_ranks(case, k):
    s, rel = case
    order = _ranks(s)
    rows = [i for i in range(len(s)) if rel[i].any()]
    if not rows:
        assert R.recall_at_k(s, rel, k) == 0.0
        return
    recall = [rel[i, order[i, :k]].sum() / rel[i].sum() for i in rows]
    rr = [1.0 / (1 + np.flatnonzero(rel[i, order[i]])[0]) for i in rows]
    # AP@k as torchmetrics defines it (and common.metrics.retrieval documents): the mean of precision@i over
    # the ranks i <= k that hold a relevant item, i.e. divided by the relevant items *found* in the top k.
    ap = []
    for i in rows:
        hits = rel[i, order[i, :k]]
        precisions = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        ap.append(float((precisions * hits).sum() / hits.sum()) if hits.any() else 0.0)
    assert R.recall_at_k(s, rel, k) == pytest.approx(np.mean(recall), abs=1e-6)
    assert R.mrr(s, rel) == pytest.approx(np.mean(rr), abs=1e-6)
    assert R.map_at_k(s, rel, k) == pytest.approx(np.mean(ap), abs=1e-6)
    assert R.ranked_recall_at_k(order, [set(np.flatnonzero(r)) for r in rel], k) == pytest.approx(np.mean(recall))


def test_ranking_metrics_count_relevant_items_with_non_positive_scores():
    """torchmetrics >= 1.9 drops items scored <= 0; a cosine of -0.2 at rank 1 is still a hit."""
    s = np.array([[-0.2, -0.5, -0.9], [0.0, -0.1, -0.3]])
    rel = np.array([[True, False, False], [False, True, False]])
    assert R.recall_at_k(s, rel, 1) == 0.5 and R.recall_at_k(s, rel, 2) == 1.0
    assert R.mrr(s, rel) == pytest.approx(0.75)
    assert R.map_at_k(s, rel, 2) == pytest.approx(0.75)


@CASES
@given(st.lists(st.integers(0, 4), min_size=1, max_size=15), st.data())
def test_shopee_f1_from_set_sizes(group_of, data):
    ids = [f"p{i}" for i in range(len(group_of))]
    groups = dict(zip(ids, group_of, strict=True))
    matches = {pid: data.draw(st.lists(st.sampled_from([*ids, "stranger"]), unique=True, max_size=6)) for pid in ids}
    ref = []
    for pid in ids:
        truth = {q for q in ids if groups[q] == groups[pid]}
        pred = set(matches[pid])
        tp = len(truth & pred)
        ref.append(2 * tp / (len(truth) + len(pred)))
    assert R.shopee_f1(matches, groups) == pytest.approx(np.mean(ref))


# ---------------------------------------------------------------------------------------------------- brand


@CASES
@given(st.lists(st.tuples(st.sampled_from(["logo", "none", "none_brand"]), st.sampled_from(["acme", "zenith", "orbit"]),
                          st.sampled_from(["acme", "zenith", "orbit", None])), max_size=30))
def test_brand_recalls_from_counts(rows):
    """Captions that name exactly one brand (or none): each recall is a plain share of its kind's samples."""
    matcher = B.BrandMatcher(["acme", "zenith", "orbit"])
    samples = [B.Sample(kind, None if kind == "none" else gold, f"a {named} bag" if named else "a plain bag")
               for kind, gold, named in rows]
    got = B.brand_recalls(samples, matcher)

    def share(xs):
        return sum(xs) / len(xs) if xs else math.nan

    logo = [(s.brand, (s.caption.split()[1] == s.brand)) for s in samples if s.kind == "logo"]
    per_brand = {}
    for b, hit in logo:
        per_brand.setdefault(b, []).append(hit)
    want = {
        "logo_recall": share([h for _, h in logo]),
        "brand_recall": share([share(v) for v in per_brand.values()]),
        "none_recall": share([s.caption == "a plain bag" for s in samples if s.kind == "none"]),
        "none_brand_recall": share([s.caption != "a plain bag" for s in samples if s.kind == "none_brand"]),
        "none_brand_label_recall": share([s.caption.split()[1] == s.brand for s in samples if s.kind == "none_brand"]),
    }
    for key, value in want.items():
        assert (math.isnan(got[key]) and math.isnan(value)) or got[key] == pytest.approx(value), key
