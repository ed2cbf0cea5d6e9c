"""Samplers for imbalanced labels: class-balanced sampling and oversampling of rare multi-label tags."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


def class_balanced_weights(labels: Sequence) -> np.ndarray:
    """Per-sample weight 1/count(label): every class is drawn equally often in expectation."""
    labels = np.asarray([str(x) for x in labels])
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def rare_label_weights(label_matrix: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Per-sample weight for multi-hot labels: the max over its labels of (max_count / count)^power.

    Samples without any label keep weight 1; a tag 100x rarer than the most common one is drawn
    10x more often with ``power=0.5``.
    """
    label_matrix = np.asarray(label_matrix) > 0
    counts = label_matrix.sum(0).astype(float)
    boost = np.where(counts > 0, (counts.max() / np.maximum(counts, 1)) ** power, 1.0)
    per_sample = np.where(label_matrix, boost[None, :], 1.0).max(1)
    return per_sample


def weighted_sampler(weights: np.ndarray, num_samples: int | None = None, seed: int = 0) -> WeightedRandomSampler:
    g = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double), num_samples or len(weights), replacement=True, generator=g
    )


def oversample_indices(label_matrix: np.ndarray, min_count: int, seed: int = 0) -> np.ndarray:
    """All indices plus repeats of samples carrying labels with fewer than ``min_count`` positives."""
    label_matrix = np.asarray(label_matrix) > 0
    rng = np.random.default_rng(seed)
    out = [np.arange(len(label_matrix))]
    for j in range(label_matrix.shape[1]):
        pos = np.flatnonzero(label_matrix[:, j])
        if 0 < len(pos) < min_count:
            out.append(rng.choice(pos, size=min_count - len(pos), replace=True))
    return np.concatenate(out)
