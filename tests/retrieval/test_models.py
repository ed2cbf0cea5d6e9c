"""Towers, losses and the reranker on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_fuse_weights_the_cross_encoder_against_the_first_stage():
    from retrieval.rerank import fuse

    first = np.array([0.90, 0.85, 0.80])  # bi-encoder cosine, already in its order
    logits = np.array([-2.0, 3.0, 0.0])
    assert fuse(first, logits, 0.0).tolist() == [0, 1, 2]  # weight 0: the first stage unchanged
    assert fuse(first, logits, float("inf")).tolist() == [1, 2, 0]  # the cross-encoder alone
    assert fuse(first, logits, 0.005).tolist() == [0, 1, 2]  # 0.89, 0.865, 0.80: too light to reorder
    assert fuse(first, logits, 0.02).tolist() == [1, 0, 2]  # 0.86, 0.91, 0.80
    tied = np.array([5.0, 5.0, 1.0])
    assert fuse(np.array([0.1, 0.3, 0.9]), tied, float("inf")).tolist() == [1, 0, 2]  # ties go to the first stage


def test_symmetric_info_nce_adds_the_positive_to_anchor_direction():
    # anchors 0,1 and positives 0,1 aligned one way only: positive 1 is as close to anchor 0 as to anchor 1
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    g = torch.tensor([0, 1])
    one = info_nce(a, p, None, 1.0, g, g)
    both = info_nce(a, p, None, 1.0, g, g, symmetric=True)
    logits = a @ p.T
    expected_back = torch.nn.functional.cross_entropy(logits.T, torch.arange(2))
    assert torch.allclose(both, (one + expected_back) / 2)
    assert torch.allclose(info_nce(a, a, None, 1.0, g, g, symmetric=True), info_nce(a, a, None, 1.0, g, g))


def test_expand_codes_appends_separator_free_product_codes():
    from retrieval.normalise import expand_codes

    assert expand_codes("Sony Cyber-shot DSC-W300 Camera") == "Sony Cyber-shot DSC-W300 Camera DSCW300"
    assert expand_codes("Kingston KHX1600C9D3K2/4GX 4GB") == "Kingston KHX1600C9D3K2/4GX 4GB KHX1600C9D3K24GX"
    assert expand_codes("Bose 5.1 wall-mount speakers") == "Bose 5.1 wall-mount speakers"  # digits only / letters only
    assert expand_codes("3-pack") == "3-pack 3pack"
    assert expand_codes("PSLX350H") == "PSLX350H"


def test_linear_schedule_warms_up_then_decays_to_zero():
    from unittest.mock import PropertyMock, patch

    from common.optim import nodes
    from retrieval.module import RetrievalModule

    opt, sched = nodes(lr=1.0, weight_decay=0.0, schedule_name="linear", warmup_steps=2)
    m = RetrievalModule({"text": TINY_TEXT, "image": None}, optim=opt, scheduler=sched)
    with patch.object(RetrievalModule, "trainer", new_callable=PropertyMock) as tr:
        tr.return_value.estimated_stepping_batches = 10
        conf = m.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])  # transformers' linear


def test_training_epoch_puts_pretrained_towers_in_train_mode():
    # from_pretrained returns eval mode and Lightning keeps submodule modes: dropout would stay off
    from retrieval.module import RetrievalModule
    from retrieval.rerank import RerankerModule

    m = RetrievalModule({"text": TINY_TEXT, "image": None})
    r = RerankerModule({"name_or_path": None, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 32})
    for mod in (m, r):
        mod.net.eval()
        mod.train()  # what Lightning does to the top module only
        mod.net.eval()
        mod.on_train_epoch_start()
        assert all(x.training for x in mod.net.modules())
