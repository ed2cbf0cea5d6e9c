import numpy as np
import pytest
from sklearn.metrics import f1_score

from common.metrics import classification as C

LABELS = ["A", "B", "C"]
Y_TRUE = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]])
Y_PRED = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 0, 0]])


def test_micro_macro_on_hand_computed_case():
    micro = C.prf(Y_TRUE, Y_PRED, "micro", LABELS)
    assert (micro.precision, micro.recall, micro.f1) == pytest.approx((0.6, 0.6, 0.6))
    macro = C.prf(Y_TRUE, Y_PRED, "macro", LABELS)
    assert macro.precision == pytest.approx(2 / 3)
    assert macro.recall == pytest.approx(2 / 3)
    assert macro.f1 == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)


def test_excluding_a_label_from_the_averages():
    micro = C.prf(Y_TRUE, Y_PRED, "micro", LABELS, exclude=["C"])
    assert (micro.precision, micro.recall, micro.f1) == pytest.approx((2 / 3, 0.5, 4 / 7))
    macro = C.prf(Y_TRUE, Y_PRED, "macro", LABELS, exclude=["C"])
    assert macro.f1 == pytest.approx((0.5 + 2 / 3) / 2)


def test_neuralclassifier_line():
    assert C.neuralclassifier_line(Y_TRUE, Y_PRED, LABELS) == (
        "precision: 0.600000, recall: 0.600000, fscore: 0.600000, right: 3, predict: 5, standard: 5"
    )
    assert C.neuralclassifier_line(Y_TRUE, Y_PRED, LABELS, exclude=["C"]).endswith("right: 2, predict: 3, standard: 4")


def test_per_label_rows():
    rows = {r.label: r for r in C.per_label(Y_TRUE, Y_PRED, LABELS)}
    assert (rows["B"].precision, rows["B"].recall, rows["B"].right, rows["B"].predict, rows["B"].standard) == (1.0, 0.5, 1, 1, 2)
    assert rows["C"].f1 == pytest.approx(2 / 3)


def test_agrees_with_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    yt, yp = rng.integers(0, 2, (50, 6)), rng.integers(0, 2, (50, 6))
    for avg in ("micro", "macro"):
        assert C.prf(yt, yp, avg).f1 == pytest.approx(f1_score(yt, yp, average=avg, zero_division=0))


def test_label_never_predicted_counts_zero_not_error():
    yt = np.array([[1, 1], [0, 1]])
    yp = np.array([[0, 1], [0, 1]])
    assert C.prf(yt, yp, "macro").precision == pytest.approx(0.5)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="equal-shaped"):
        C.prf(Y_TRUE, Y_PRED[:, :2])


def test_markdown_table_lists_every_label():
    md = C.markdown_table(C.per_label(Y_TRUE, Y_PRED, LABELS))
    assert md.count("\n") == 2 + len(LABELS) and "| B | 1.0000 | 0.5000 |" in md
