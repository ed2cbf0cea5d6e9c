"""Towers, losses and the reranker on hand-made inputs."""

from __future__ import annotations

import torch

from retrieval.losses import info_nce
from retrieval.models.fusion import ArcFace, MatchModel

TINY_TEXT = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_length": 16}


def test_fusion_is_weighted_average_of_similarities():
    torch.manual_seed(0)
    m = MatchModel(text=TINY_TEXT, image={"arch": "retrieval-tiny-vit"}, text_weight=0.7).eval()
    batch = {"title": ["red shampoo 500ml", "blue power bank"], "image": torch.randn(2, 3, 64, 64)}
    with torch.no_grad():
        fused = m(batch)
        t, i = m.text(batch["title"]), m.image(batch["image"])
    assert torch.allclose(fused @ fused.T, 0.7 * (t @ t.T) + 0.3 * (i @ i.T), atol=1e-5)
    assert torch.allclose(fused.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_text_tower_poolings_are_normalised():
    from retrieval.models.text import TextTower

    for pooling in ("cls", "mean", "last"):
        e = TextTower(pooling=pooling, **TINY_TEXT)(["a b c", "d"])
        assert torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_info_nce_masks_same_group_and_rewards_alignment():
    a = torch.eye(3)
    good = info_nce(a, a.clone(), None, 0.1, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    bad = info_nce(a, a.roll(1, 0), None, 0.1, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    assert good < 0.01 < bad
    # a "negative" identical to the positive: masked when it is of the anchor's group (loss ~0), else log 2
    neg = torch.eye(3)[:1]
    masked = info_nce(a[:1], a[:1].clone(), neg, 0.1, torch.tensor([0]), torch.tensor([0, 0]))
    unmasked = info_nce(a[:1], a[:1].clone(), neg, 0.1, torch.tensor([0]), torch.tensor([0, 5]))
    assert masked < 1e-3 and abs(float(unmasked) - float(torch.log(torch.tensor(2.0)))) < 1e-3


def test_arcface_margin_raises_loss():
    torch.manual_seed(0)
    head = ArcFace(8, 4, margin=0.0, scale=10.0)
    emb, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    plain = head(emb, y)
    head.m = 0.5
    assert head(emb, y) > plain
    sub = ArcFace(8, 4, subcenters=3)
    assert sub.weight.shape == (12, 8) and torch.isfinite(sub(emb, y))


def test_reranker_grouped_ce_and_rerank_order():
    from retrieval.rerank import RerankerModule, rerank

    torch.manual_seed(0)
    m = RerankerModule({"name_or_path": None, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 32},
                       loss="grouped_ce")
    loss = m.training_step({"query": ["sony x1", "lg m2"], "docs": [["sony x1 cam", "canon", "nikon"], ["lg m2", "a", "b"]]}, 0)
    assert torch.isfinite(loss)
    order = rerank(m, ["q1", "q2"], [["a", "b", "c"], ["d"]])
    assert sorted(order[0].tolist()) == [0, 1, 2] and order[1].tolist() == [0]
