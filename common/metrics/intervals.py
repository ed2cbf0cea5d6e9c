"""Bootstrap confidence intervals for a metric on one test set, and for the difference of two models on it.

Rows (test items) are resampled with replacement; a paired interval resamples the *same* rows for both
models, so it answers "is A better than B on this kind of data" rather than "do their separate intervals
overlap" (which is too conservative). scipy's :func:`scipy.stats.bootstrap` does the resampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import bootstrap


@dataclass(frozen=True)
class Interval:
    value: float  # the metric on the whole test set
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"

    def excludes(self, x: float) -> bool:
        return not self.low <= x <= self.high


def bootstrap_interval(
    metric: Callable[[np.ndarray], float], n: int, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0
) -> Interval:
    """``metric(rows)`` computes the figure on the test rows ``rows`` (an index array); the interval is the
    percentile interval of ``metric`` over ``n_resamples`` resamples of ``range(n)``."""
    if n < 2:
        v = float(metric(np.arange(n)))
        return Interval(v, v, v)
    res = bootstrap(
        (np.arange(n),), lambda rows: float(metric(rows.astype(int))), vectorized=False, n_resamples=n_resamples,
        confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
    )
    return Interval(float(metric(np.arange(n))), float(res.confidence_interval.low), float(res.confidence_interval.high))


def paired_difference(
    metric: Callable[[np.ndarray, np.ndarray], float], a: np.ndarray, b: np.ndarray, **kw
) -> Interval:
    """Interval of ``metric(a[rows], rows) - metric(b[rows], rows)``: two models' predictions on the same rows.

    ``metric(pred_rows, rows)`` scores predictions for ``rows`` (the gold labels are the caller's, indexed
    by ``rows``)."""
    a, b = np.asarray(a), np.asarray(b)
    return bootstrap_interval(lambda rows: metric(a[rows], rows) - metric(b[rows], rows), len(a), **kw)
