"""Contrastive losses over (anchor, positive, negatives) embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(anchor: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None, temperature: float,
             anchor_groups: torch.Tensor, cand_groups: torch.Tensor, symmetric: bool = False) -> torch.Tensor:
    """InfoNCE: each anchor against its positive, the other positives of the batch and all mined negatives.

    Candidates of the anchor's own group (other than its positive) are masked out, so a duplicate listing
    is never pushed away as a negative. ``symmetric`` averages in the other direction: each positive against
    the batch's anchors (the same similarities, transposed; no mined negatives on that side).
    """
    cands = pos if neg is None else torch.cat([pos, neg])
    logits = anchor @ cands.T / temperature
    n = anchor.shape[0]
    same = anchor_groups[:, None] == cand_groups[None, :]
    same[torch.arange(n), torch.arange(n)] = False
    logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(n, device=anchor.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = (loss + F.cross_entropy(logits[:, :n].T, target)) / 2
    return loss
