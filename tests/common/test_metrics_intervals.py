import numpy as np
import pytest

from common.metrics.intervals import bootstrap_interval, paired_difference


def test_accuracy_interval_matches_the_binomial_normal_approximation():
    correct = np.r_[np.ones(800), np.zeros(200)]
    ci = bootstrap_interval(lambda rows: correct[rows].mean(), len(correct), n_resamples=2000)
    half = 1.96 * np.sqrt(0.8 * 0.2 / 1000)  # 0.0248
    assert ci.value == 0.8
    assert ci.low == pytest.approx(0.8 - half, abs=0.006) and ci.high == pytest.approx(0.8 + half, abs=0.006)
    assert ci.excludes(0.75) and not ci.excludes(0.8)


def test_paired_difference_of_a_model_with_itself_is_exactly_zero_and_a_clear_gap_excludes_zero():
    gold = np.r_[np.ones(300), np.zeros(300)].astype(int)
    a = gold.copy()
    a[:30] = 0  # A misses 30
    b = gold.copy()
    b[:90] = 0  # B misses 90, the same 30 among them

    def acc(pred, rows):
        return (pred == gold[rows]).mean()

    same = paired_difference(acc, a, a)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    gap = paired_difference(acc, a, b)
    assert gap.value == pytest.approx(60 / 600) and gap.excludes(0.0) and gap.low > 0.07


def test_deterministic_for_a_seed():
    x = np.random.default_rng(1).random(200)
    assert bootstrap_interval(lambda r: x[r].mean(), 200) == bootstrap_interval(lambda r: x[r].mean(), 200)
