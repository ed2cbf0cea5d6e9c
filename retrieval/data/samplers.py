"""The batch sampler of training: no two anchors of one group in a batch (no false in-batch negatives)."""

from __future__ import annotations

import random

import torch


class UniqueGroupBatchSampler(torch.utils.data.BatchSampler):
    """Shuffled batches of anchors whose groups are all different (no false negatives in the batch).

    Under DDP Lightning passes a ``DistributedSampler`` as ``sampler`` (only its rank and world size are
    used): every rank draws the same global batches of ``batch_size * world`` anchors and takes every
    world-th one, so one step sees exactly the batch one process would see with the global batch size
    (a last batch is cut to a multiple of the world size so all ranks step together with equal shapes).
    ``len()`` is the number of batches the next ``iter()`` yields (it depends on that epoch's shuffle).
    """

    def __init__(self, anchors: list[int], groups: list[str], batch_size: int, seed: int, sampler=None):
        self.anchors, self.groups, self.batch_size, self.seed, self.epoch = anchors, groups, batch_size, seed, 0
        self.sampler, self.drop_last = sampler, False
        self.rank, self.world = getattr(sampler, "rank", 0), getattr(sampler, "num_replicas", 1)
        self.bs = batch_size * self.world

    def __iter__(self):
        batches = self._rank_batches(self.epoch)
        self.epoch += 1
        return iter(batches)

    def __len__(self):
        # How many batches depends on the epoch's shuffle (a short last batch; anchors of a group already in
        # the batch wait for the next one and the last of them are dropped), so count the coming epoch's.
        return len(self._rank_batches(self.epoch))

    def _rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch`` (a pure function of seed and epoch: len() and iter() agree)."""
        w = self.world
        cut = (b[: len(b) - len(b) % w] for b in self._global_batches(epoch))
        return [b[self.rank :: w] for b in cut if b]

    def _global_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed + epoch)
        order = list(range(len(self.anchors)))
        rng.shuffle(order)
        batches, cur, used, rest = [], [], set(), []
        for k in order:
            g = self.groups[self.anchors[k]]
            (rest if g in used else cur).append(k)
            if g not in used:
                used.add(g)
            if len(cur) == self.bs:
                batches.append(cur)
                cur, used = [], set()
                pending, rest = rest, []
                for r in pending:
                    gr = self.groups[self.anchors[r]]
                    if gr in used:
                        rest.append(r)
                    else:
                        cur.append(r)
                        used.add(gr)
        if len(cur) > 1:
            batches.append(cur)
        return batches
