"""The one threshold search: F1 at every threshold equals scikit-learn's, and one tie-break everywhere."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from common.metrics.thresholds import best_f1_threshold, f1_at, pick


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 1.0, -0.3]), st.booleans()), min_size=1, max_size=30),
       st.lists(st.sampled_from([-1.0, 0.0, 0.1, 0.25, 0.3, 0.5, 0.75, 0.9, 1.0, 2.0]), min_size=1, max_size=8))
def test_f1_at_matches_sklearn_at_every_threshold(rows, thresholds):
    scores = np.array([s for s, _ in rows])
    labels = np.array([int(y) for _, y in rows])
    want = [f1_score(labels, (scores >= t).astype(int), zero_division=0) for t in thresholds]
    np.testing.assert_allclose(f1_at(scores, labels, thresholds), want, atol=1e-12)


def test_pick_takes_the_middle_of_the_best_plateau_whatever_the_input_order():
    assert pick([0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.9, 0.9, 0.9, 0.1]) == (0.3, 0.9)
    assert pick([0.5, 0.3, 0.1, 0.4, 0.2], [0.1, 0.9, 0.5, 0.9, 0.9]) == (0.3, 0.9)
    assert pick([0.2, 0.4], [0.7, 0.7]) == (0.4, 0.7)  # even plateau: the upper middle
    with pytest.raises(ValueError, match="no thresholds"):
        pick([], [])


def test_best_f1_threshold_on_a_hand_made_case():
    # scores 0.9 0.8 (pos) 0.6 (neg) 0.4 (pos) 0.2 (neg): t=0.8 -> P 1 R 2/3 F1 0.8; t=0.4 -> P 3/4 R 1 F1 6/7
    t, f1 = best_f1_threshold([0.9, 0.8, 0.6, 0.4, 0.2], [1, 1, 0, 1, 0], [0.2, 0.4, 0.6, 0.8, 0.9])
    assert t == 0.4 and f1 == pytest.approx(6 / 7)
