"""Evaluation outputs across ranks, once for every package.

Under DDP Lightning evaluates with a non-shuffling ``DistributedSampler``: rank ``r`` of ``w`` gets dataset
items ``r, r + w, r + 2w, ...`` and the last round is padded with repeats of the first items so every rank has
as many. :func:`gathered` brings every rank's list of per-item outputs back as one list in dataset order,
each item once, on every rank (thresholds tuned on it are then the same everywhere).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

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


def gathered(items: list[T], world_size: int, n: int | None = None, key: Callable[[T], Hashable] | None = None) -> list[T]:
    """This rank's per-item outputs -> every rank's, in dataset order, each item once (see the module doc)."""
    if world_size <= 1:
        return items
    return merge_shards(all_ranks(items, world_size), n=n, key=key)
