"""What each rank evaluated comes back whole: the shards a DistributedSampler hands out (padded with repeats)
merge into every item once, in dataset order. Hand-made shards, the collective replaced by its result."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DistributedSampler

from common.distributed import gathered_arrays, merge_shards
from retrieval.module import RetrievalModule
from vlm.module import CaptionModule

ITEMS = ["a", "b", "c", "d", "e"]  # 5 items on 2 ranks: the sampler pads rank 1 with a repeat of "a"


def _shards() -> list[list[int]]:
    return [list(DistributedSampler(ITEMS, num_replicas=2, rank=r, shuffle=False)) for r in range(2)]


def _fake_all_gather(monkeypatch, per_rank: list) -> None:
    def all_gather_object(parts, obj):
        parts[:] = per_rank

    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)


def test_shards_are_padded_with_a_repeat():
    assert _shards() == [[0, 2, 4], [1, 3, 0]]


def test_vlm_captions_gathered_once_each_in_dataset_order(monkeypatch):
    preds = [{0: [{"id": ITEMS[i], "pred": f"cap {ITEMS[i]}"} for i in shard],
              1: [{"id": f"t{i}", "pred": "x"} for i in shard]} for shard in _shards()]
    _fake_all_gather(monkeypatch, preds)
    me = SimpleNamespace(trainer=SimpleNamespace(world_size=2), _preds=preds[0])
    CaptionModule._gather_preds(me)
    assert [p["id"] for p in me._preds[0]] == ITEMS
    assert [p["pred"] for p in me._preds[0]] == [f"cap {x}" for x in ITEMS]
    assert [p["id"] for p in me._preds[1]] == [f"t{i}" for i in range(5)]


def test_vlm_single_process_left_alone(monkeypatch):
    _fake_all_gather(monkeypatch, [])
    me = SimpleNamespace(trainer=SimpleNamespace(world_size=1), _preds={0: [{"id": "b"}, {"id": "a"}]})
    CaptionModule._gather_preds(me)
    assert me._preds == {0: [{"id": "b"}, {"id": "a"}]}


def test_retrieval_embeddings_gathered_from_every_rank(monkeypatch):
    emb = [{i: np.full(2, float(i)) for i in shard} for shard in _shards()]
    _fake_all_gather(monkeypatch, emb)
    me = SimpleNamespace(trainer=SimpleNamespace(world_size=2), _emb=emb[0])
    RetrievalModule._gather_emb(me)
    assert sorted(me._emb) == [0, 1, 2, 3, 4]
    assert all((me._emb[i] == i).all() for i in range(5))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), world=st.integers(1, 5))
def test_merge_shards_gives_the_dataset_back_for_any_sampler_split(n, world):
    shards = [list(DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=False)) for r in range(world)]
    assert merge_shards(shards, n=n) == list(range(n))
    assert merge_shards(shards, key=lambda i: i) == list(range(n))


def test_textcls_outputs_gathered_once_each_so_every_rank_tunes_on_the_same_split(monkeypatch):
    from textcls.module import TextClassifier

    per_rank = [(np.array([[float(i)] for i in shard]), np.array([[i % 2] for i in shard]), np.array(shard)) for shard in _shards()]
    _fake_all_gather(monkeypatch, per_rank)
    batches = [tuple(torch.as_tensor(a) for a in per_rank[0])]
    me = SimpleNamespace(trainer=SimpleNamespace(world_size=2), _outputs={"val": batches})
    probs, targets, index = TextClassifier._gathered(me, "val")
    assert index.tolist() == [0, 1, 2, 3, 4] and probs[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert targets[:, 0].tolist() == [0, 1, 0, 1, 0]


def test_reranker_scores_gathered_and_padding_cut(monkeypatch):
    from retrieval.rerank import RerankerModule

    per_rank = [(np.array([float(i) for i in shard], dtype=np.float32), np.array([i % 2 for i in shard])) for shard in _shards()]
    _fake_all_gather(monkeypatch, per_rank)
    loader = SimpleNamespace(dataset=ITEMS)
    me = SimpleNamespace(trainer=SimpleNamespace(world_size=2, val_dataloaders=loader), _scores=[torch.tensor([0.0, 2.0, 4.0])],
                         _labels=[torch.tensor([0.0, 0.0, 0.0])])
    s, y = RerankerModule._flush(me, "val")
    assert s.tolist() == [0, 1, 2, 3, 4] and y.tolist() == [0, 1, 0, 1, 0]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), world=st.integers(2, 5))
def test_gathered_arrays_agree_with_merge_shards(n, world):
    from unittest.mock import patch

    shards = [list(DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=False)) for r in range(world)]
    per_rank = [(np.array(s) * 10, np.array(s)) for s in shards]
    with patch.object(torch.distributed, "all_gather_object", lambda parts, obj: parts.__setitem__(slice(None), per_rank)):
        got_cut = gathered_arrays((np.zeros(1), np.zeros(1)), world, n=n)
        got_key = gathered_arrays((np.zeros(1), np.zeros(1)), world, key=1)
    assert got_cut[0].tolist() == [10 * i for i in merge_shards(shards, n=n)]
    assert got_key[1].tolist() == list(range(n))
