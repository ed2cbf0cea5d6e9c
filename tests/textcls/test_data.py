"""Readers and bad input: every problem is one line naming file:line (in-process; the CLI once in test_cli)."""

from __future__ import annotations

import json
import logging

import pytest
from omegaconf import OmegaConf

from common.config import validate
from common.errors import ConfigError, DataError
from tests.textcls.conftest import CONF, compose_cfg
from textcls.build import SCHEMAS
from textcls.data import DataConfig, TextDataModule, read_docs, read_toutiao
from textcls.taxonomy import Taxonomy

TAX = Taxonomy.car_news()


def _jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def test_neuralclassifier_records(tmp_path):
    f = _jsonl(tmp_path / "a.jsonl", [
        {"doc_token": ["小", "米", "谍", "照"], "doc_label": ["新车资讯--谍照"], "doc_keyword": []},
        {"doc_token": ["小米", "SU7", "上市"], "doc_label": ["新车资讯--新车上市", "新车资讯--新车解析"]},
        {"text": "国足公布名单", "doc_label": ["其他"]},
    ])
    docs = read_docs(f, TAX)
    assert [d.text for d in docs] == ["小米谍照", "小米 SU7 上市", "国足公布名单"]
    assert docs[1].labels == ("新车资讯--新车上市", "新车资讯--新车解析")


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": "小米SU7上市", "doc_label": ["新车资讯--新车上市"]', r"invalid JSON"),
        ({"text": "   ", "doc_label": ["其他"]}, r"field 'text' is empty"),
        ({"text": "小米SU7上市", "doc_label": ["新车资讯--试驾"]}, r"label '新车资讯--试驾' is not in the taxonomy"),
        ({"doc_label": ["其他"]}, r"missing field 'doc_token' or 'text'"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, line, message):
    f = _jsonl(tmp_path / "bad.jsonl", [{"text": "好文章", "doc_label": ["其他"]}, line])
    with pytest.raises(DataError, match=rf"^{tmp_path}/bad.jsonl:2: {message}"):
        read_docs(f, TAX)
    # skip mode drops the record and keeps the rest
    assert len(read_docs(f, TAX, on_bad_record="skip")) == 1


def test_missing_file_and_toutiao_lines(tmp_path):
    with pytest.raises(DataError, match=r"none.jsonl: no such file"):
        read_docs(tmp_path / "none.jsonl", TAX)
    f = tmp_path / "t.txt"
    f.write_text("1_!_107_!_news_car_!_小米SU7上市_!_小米\n2_!_103_!_news_sports_!_  _!_\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"t.txt:2: field 'headline' is empty"):
        read_toutiao(f)
    f.write_text("1_!_107_!_news_car_!_小米SU7上市_!_小米\n2_!_103\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"t.txt:2: expected 5 '_!_'-separated fields, got 2"):
        read_toutiao(f)


def test_unknown_val_label_without_taxonomy(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"text": f"文章{i}", "doc_label": ["a" if i % 2 else "b"]} for i in range(10)])
    val = _jsonl(tmp_path / "val.jsonl", [{"text": "x", "doc_label": ["a"]}, {"text": "y", "doc_label": ["c"]}])
    cfg = DataConfig(source="jsonl", task="multilabel", train_file=str(train), val_file=str(val), test_file=str(val), min_freq=1)
    with pytest.raises(DataError, match=r"val.jsonl:2: label 'c' is not a label of the training data"):
        TextDataModule(cfg)
    with pytest.raises(ConfigError, match="data.task: expected one of"):
        TextDataModule(DataConfig(task="regression"))


def test_jsonl_source_splits_deterministically(tmp_path):
    rows = [{"text": f"小米SU7上市{i}", "doc_label": ["新车资讯--新车上市"]} for i in range(30)]
    rows += [{"text": f"国足名单{i}", "doc_label": ["其他"]} for i in range(70)]
    f = _jsonl(tmp_path / "all.jsonl", rows)
    cfg = DataConfig(source="jsonl", task="hierarchical", train_file=str(f), min_freq=1)
    a, b = TextDataModule(cfg), TextDataModule(cfg)
    assert [d.text for d in a.test.docs] == [d.text for d in b.test.docs]
    assert (len(a.train), len(a.val), len(a.test)) == (80, 10, 10)
    assert a.space.labels == ["新车资讯", "新车资讯--新车上市"] and a.fingerprint == b.fingerprint


def test_samplers_draw_rare_labels_more_often(tmp_path):
    rows = [{"text": f"小米SU7谍照{i}", "doc_label": ["新车资讯--谍照"]} for i in range(4)]
    rows += [{"text": f"比亚迪汉上市{i}", "doc_label": ["新车资讯--新车上市"]} for i in range(36)]
    rows += [{"text": f"国足名单{i}", "doc_label": ["其他"]} for i in range(60)]
    f = _jsonl(tmp_path / "all.jsonl", rows)
    base = dict(source="jsonl", task="multilabel", train_file=str(f), min_freq=1, split=[0.8, 0.1, 0.1])

    def share_of_rare(sampler: str) -> float:
        dm = TextDataModule(DataConfig(**base, sampler=sampler, oversample_min_count=40))
        col = dm.space.index["新车资讯--谍照"]
        drawn = [dm.train.targets[i, col].item() for i in dm.train_dataloader().sampler]
        return sum(drawn) / len(drawn)

    plain = 4 / 100
    assert share_of_rare("oversample") > 3 * plain
    assert share_of_rare("rare") > 1.5 * plain
    with pytest.raises(ConfigError, match="data.sampler: expected one of"):
        TextDataModule(DataConfig(**base, sampler="smote"))


@pytest.mark.parametrize("data", sorted(p.stem for p in (CONF / "data").glob("*.yaml")))
def test_every_data_option_takes_on_bad_record(tmp_path, data):
    # `python -m textcls.train data=<option> data.on_bad_record=skip`, as the README says (no `+` needed)
    cfg = compose_cfg(tmp_path, f"data={data}", "data.on_bad_record=skip")
    assert cfg.data.on_bad_record == "skip"


def test_toutiao_run_skips_bad_lines(tmp_path, caplog):
    f = tmp_path / "toutiao.txt"
    good = [f"{i}_!_{code}_!_{name}_!_标题{i}_!_" for i in range(30)
            for code, name in [("107", "news_car"), ("103", "news_sports")][i % 2:i % 2 + 1]]
    f.write_text("\n".join([*good[:5], "99_!_105_!_news_x_!_坏行_!_", *good[5:]]) + "\n", encoding="utf-8")
    cfg = validate(compose_cfg(tmp_path, "data=toutiao", f"data.train_file={f}", "data.on_bad_record=skip"), SCHEMAS)
    with caplog.at_level(logging.WARNING):
        dm = TextDataModule(OmegaConf.to_object(cfg.data))
    assert len(dm.train) + len(dm.val) + len(dm.test) == 30
    assert f"{f}: skipped 1 bad record(s), e.g. {f}:6: unknown class code '105'" in caplog.text


def _toutiao(path, rows):
    """``rows``: (class code, name, headline) -> a Toutiao ``_!_`` file."""
    path.write_text("\n".join(f"{6550000000000000000 + i}_!_{c}_!_{n}_!_{h}_!_" for i, (c, n, h) in enumerate(rows)), encoding="utf-8")
    return path


def _headlines(prefix: str, n: int):
    return [("107", "news_car", f"{prefix}新车上市第{i}款") if i % 3 == 0 else ("103", "news_sports", f"{prefix}球队赢了第{i}场")
            for i in range(n)]


def test_toutiao_test_file_is_the_test_part_and_train_file_is_split_into_train_and_val(tmp_path):
    train = _toutiao(tmp_path / "train.txt", _headlines("甲", 90))
    test = _toutiao(tmp_path / "test.txt", _headlines("乙", 12))
    cfg = DataConfig(source="toutiao", task="binary", positive_label="news_car", train_file=str(train), test_file=str(test), min_freq=1)
    dm = TextDataModule(cfg)
    assert [d.text for d in dm.test.docs] == [h for _, _, h in _headlines("乙", 12)]
    assert (len(dm.train), len(dm.val)) == (80, 10)  # 80/10/10 rescaled to 8:1 over train_file's 90 lines
    assert {d.text for d in dm.train.docs + dm.val.docs} == {h for _, _, h in _headlines("甲", 90)}
    assert dm.test.targets[:, 0].tolist() == [1.0 if i % 3 == 0 else 0.0 for i in range(12)]
    # val_file as well: nothing is cut from train_file
    both = TextDataModule(DataConfig(**{**cfg.__dict__, "val_file": str(test)}))
    assert (len(both.train), len(both.val), len(both.test)) == (90, 12, 12)


def test_a_test_file_that_is_the_train_file_is_refused(tmp_path):
    train = _toutiao(tmp_path / "train.txt", _headlines("甲", 30))
    cfg = DataConfig(source="toutiao", task="multiclass", train_file=str(train), test_file=str(tmp_path / "." / "train.txt"))
    with pytest.raises(ConfigError, match=r"data.test_file: is data.train_file itself"):
        TextDataModule(cfg)


def test_jsonl_val_file_alone_leaves_train_and_test_to_the_split(tmp_path):
    rows = [{"text": f"小米SU7上市{i}", "doc_label": ["新车资讯--新车上市"]} if i % 2 else {"text": f"国足{i}", "doc_label": ["其他"]}
            for i in range(45)]
    train = _jsonl(tmp_path / "train.jsonl", rows)
    val = _jsonl(tmp_path / "val.jsonl", rows[:7])
    dm = TextDataModule(DataConfig(source="jsonl", task="hierarchical", train_file=str(train), val_file=str(val), taxonomy=None, min_freq=1))
    assert (len(dm.train), len(dm.val), len(dm.test)) == (40, 7, 5)  # 80/10 of 45 rescaled to 8:1
