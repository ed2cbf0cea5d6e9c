"""Evaluation outputs across ranks, once for every package.

Under DDP Lightning evaluates with a non-shuffling ``DistributedSampler``: rank ``r`` of ``w`` gets dataset
items ``r, r + w, r + 2w, ...`` and the last round is padded with repeats of the first items so every rank has
as many. :func:`gathered_arrays` brings every rank's list of per-item outputs back as one list in dataset order,
each item once, on every rank (thresholds tuned on it are then the same everywhere).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def all_ranks(obj: Any, world_size: int) -> list[Any]:
    """Every rank's ``obj`` in rank order (pickled through ``torch.distributed``); ``[obj]`` on one process."""
    if world_size <= 1:
        return [obj]
    import torch.distributed as dist

    parts: list[Any] = [None] * world_size
    dist.all_gather_object(parts, obj)
    return parts


def merge_shards(parts: Sequence[Sequence[T]], n: int | None = None, key: Callable[[T], Hashable] | None = None) -> list[T]:
    """Per-rank output lists -> dataset order: rank ``r``'s ``j``-th item was dataset item ``j * w + r``.

    The sampler's padding repeats come last; they are cut at ``n`` items (the dataset's length) when given,
    and dropped by ``key`` (an item id) when given.
    """
    world = len(parts)
    rows = sorted(((j * world + r, item) for r, part in enumerate(parts) for j, item in enumerate(part)),
                  key=lambda t: t[0])
    out = [item for _, item in rows]
    if n is not None:
        out = out[:n]
    if key is not None:
        seen: set = set()
        out = [item for item in out if not (key(item) in seen or seen.add(key(item)))]
    return out


def gathered_arrays(arrays: Sequence[np.ndarray], world_size: int, n: int | None = None,
                    key: int | None = None) -> tuple[np.ndarray, ...]:
    """This rank's per-item outputs (equal-length arrays, one row per item) -> every rank's, in dataset order,
    each item once, without a Python loop over rows. ``n``: the dataset's length (the padding is cut); ``key`` is the position of the array of item ids (rows with an id seen before are dropped)."""
    arrays = tuple(np.asarray(a) for a in arrays)
    if world_size <= 1:
        return arrays
    parts = all_ranks(arrays, world_size)
    # rank r's j-th row is dataset item j * w + r: stacking ranks on axis 1 and flattening interleaves them
    out = tuple(np.stack([p[i] for p in parts], axis=1).reshape(-1, *arrays[i].shape[1:]) for i in range(len(arrays)))
    if n is not None:
        out = tuple(a[:n] for a in out)
    if key is not None:
        _, first = np.unique(out[key], return_index=True)
        out = tuple(a[np.sort(first)] for a in out)
    return out
