"""``+exp=matcher``: the Ditto-style cross-encoder's pair sources, its serialisation and its CLI run.

What it learns is measured in ``docs/bench/retrieval.md`` (Abt-Buy, Walmart-Amazon); a tiny from-scratch
cross-encoder learns nothing in test time (see test_reranker.py), so these pin the data path: which pairs,
which text, within which length, and that the checkpoint says how its pairs were written."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from common.errors import ConfigError, DataError
from retrieval.pairs import pair_source, read_table_pairs
from retrieval.rerank import PairDataModule
from tests.reliability.harness import call
from tests.retrieval.test_reranker import TINY_RERANKER

MATCHER = ["+exp=matcher", *TINY_RERANKER[1:], "model.reranker.max_length=64", "model.reranker.summarise=30"]


def write_tables(root: Path, n: int = 30, seed: int = 0, valid: bool = False) -> Path:
    """DeepMatcher tables with three attributes (the code only in ``modelno``) and pair CSVs."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    a, b = ["id,title,modelno,description"], ["id,title,modelno,description"]
    for i in range(n):
        code = f"{rng.choice('ABCDEFGH')}{rng.randint(100, 999)}"
        words = " ".join(rng.choice(["black", "compact", "wireless", "usb", "hd", "pro", "mini", "kit"]) for _ in range(40))
        a.append(f'{i},Sony Speaker,{code},"{words}"')
        b.append(f'{100 + i},sony speaker,{code.lower()},"{words[:60]}"')
    (root / "tableA.csv").write_text("\n".join(a) + "\n", encoding="utf-8")
    (root / "tableB.csv").write_text("\n".join(b) + "\n", encoding="utf-8")
    parts = {"train.csv": range(0, 20), "test.csv": range(20, 30)} if not valid else {
        "train.csv": range(0, 14), "valid.csv": range(14, 20), "test.csv": range(20, 30)}
    for name, idx in parts.items():
        rows = ["ltable_id,rtable_id,label"]
        for i in idx:
            rows.append(f"{i},{100 + i},1")
            rows += [f"{i},{100 + j},0" for j in rng.sample([j for j in idx if j != i], 3)]
        (root / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_table_pairs_serialise_every_attribute_and_carve_a_stratified_valid(tmp_path):
    folder = write_tables(tmp_path / "dm")
    assert pair_source(folder) == "tables"
    splits = read_table_pairs(folder, seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 64, "valid": 16, "test": 40}  # 80 train pairs, 20 %
    assert [sum(y for *_, y in splits[k]) for k in ("train", "valid")] == [16, 4]  # the 1:3 ratio kept
    left, right, y = next(p for p in splits["test"] if p[2])
    assert left.startswith("COL title VAL Sony Speaker COL modelno VAL ") and " COL description VAL " in left
    assert right.split(" COL modelno VAL ")[1].split()[0] == left.split(" COL modelno VAL ")[1].split()[0].lower()
    # a valid.csv of the folder's own is used as is
    splits = read_table_pairs(write_tables(tmp_path / "dm2", valid=True))
    assert {k: len(v) for k, v in splits.items()} == {"train": 56, "valid": 24, "test": 40}


def test_pair_source_says_what_a_folder_lacks(tmp_path):
    with pytest.raises(DataError, match="no pair files"):
        pair_source(tmp_path)
    with pytest.raises(DataError, match="no train.txt / valid.txt / test.txt"):
        pair_source(write_tables(tmp_path / "dm"), "ditto")
    with pytest.raises(ConfigError, match="expected auto|ditto|tables"):
        pair_source(tmp_path, "csv")


def test_an_unknown_id_in_a_pair_csv_is_its_file_and_line(tmp_path):
    folder = write_tables(tmp_path / "dm")
    (folder / "test.csv").write_text("ltable_id,rtable_id,label\n1,101,1\n1,999,0\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test.csv:3: .*999"):
        read_table_pairs(folder)


def test_summarised_pairs_fit_the_cross_encoder_without_truncation(tmp_path):
    from transformers import AutoTokenizer

    from retrieval.models.text import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path())
    dm = PairDataModule(str(write_tables(tmp_path / "dm")), text="all", summarise=30, neg_per_pos=None,
                        cost=lambda w: max(1, len(tok.tokenize(w))))
    for left, right, _ in dm.train_pairs + dm.val_pairs + dm.test_pairs:
        assert len(tok(left, right)["input_ids"]) <= 63  # 2 x 30 + [CLS] [SEP] [SEP]
        assert " COL modelno VAL " in left  # markers and the rare code survive; common filler words go
    full = PairDataModule(str(tmp_path / "dm"), text="all", neg_per_pos=None)
    assert len(full.train_pairs[0][0].split()) > len(dm.train_pairs[0][0].split())


def test_augmentation_rewrites_training_pairs_only(tmp_path):
    dm = PairDataModule(str(write_tables(tmp_path / "dm")), text="all", neg_per_pos=None,
                        augment=["span_del"], augment_p=1.0)
    train = [tuple(dm.train_dataloader().dataset[i][:2]) for i in range(len(dm.train_pairs))]
    assert sum(t != p[:2] for t, p in zip(train, dm.train_pairs, strict=True)) == len(train)
    val = [dm.val_dataloader().dataset[i] for i in range(len(dm.val_pairs))]
    assert val == dm.val_pairs


def test_matcher_cli_trains_from_tables_and_its_checkpoint_says_how_pairs_were_written(tmp_path):
    folder = write_tables(tmp_path / "dm")
    ended = call("retrieval.train", *MATCHER, f"data.path={folder}", f"hydra.run.dir={tmp_path / 'run'}",
                 f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert ended.code == 0, ended.stderr[-2000:]
    import json

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"test/pair_f1", "val/pair_f1"} <= set(metrics)
    ckpt = torch.load(sorted((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))[-1], weights_only=False)
    assert ckpt["hyper_parameters"]["serialisation"] == {"text": "all", "fields": None, "summarise": 30, "codes": True}
    assert ckpt["hyper_parameters"]["encoder"]["max_length"] == 64


def test_match_writes_postings_the_way_the_checkpoint_was_trained():
    from retrieval.rerank import RerankerModule

    enc = {"name_or_path": None, "hidden_size": 32, "num_layers": 1, "num_heads": 2}
    matcher = RerankerModule(enc, serialisation={"text": "all", "fields": None, "summarise": 30, "codes": True})
    reranker = RerankerModule(enc)
    rows = [{"title": "Sony NP-141M turntable"}]
    assert matcher.record_texts(rows) == ["COL title VAL Sony NP-141M turntable NP141M"]
    assert reranker.record_texts(rows) == ["Sony NP-141M turntable"]


def test_balanced_negatives_keep_every_positive_and_draw_fresh_negatives_each_epoch():
    from retrieval.rerank import BalancedNegatives

    labels = [1] * 5 + [0] * 50
    s = BalancedNegatives(labels, 3, seed=0)
    epochs = []
    for e in range(3):
        s.set_epoch(e)
        epochs.append(list(s))
    for drawn in epochs:
        assert len(drawn) == len(s) == 20 and len(set(drawn)) == 20
        assert set(range(5)) <= set(drawn)  # every positive, 15 negatives
    assert len({frozenset(d) for d in epochs}) == 3  # a fresh draw each epoch
    s.set_epoch(1)
    assert list(s) == epochs[1]  # seeded: a rank (or a resumed run) draws the same epoch again
    assert list(s) != epochs[1] and len(list(BalancedNegatives(labels, 100))) == 55  # next pass; capped at all


def test_code_injection_writes_separator_free_codes_in_their_attribute(tmp_path):
    from retrieval.pairs import inject_codes

    text = "COL name VAL 4g nano toughskin nn4-ts-blk COL price VAL 18.58"
    assert inject_codes(text) == "COL name VAL 4g nano toughskin nn4-ts-blk nn4tsblk COL price VAL 18.58"
    assert inject_codes("sony dsc-w300 / black") == "sony dsc-w300 / black dscw300"
    dm = PairDataModule(str(write_tables(tmp_path / "dm")), text="all", neg_per_pos=3, codes=True, resample=True)
    assert dm.sampler is not None and len(dm.train_pairs) == 64  # all kept; the sampler balances each epoch
    assert len(dm.train_dataloader().sampler) == 64  # 16 positives + 48 negatives (all there are)
