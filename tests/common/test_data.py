import json

import numpy as np
import pytest
from PIL import Image

from common.data.fingerprint import fingerprint
from common.data.images import load_image
from common.data.records import BadRecords, read_csv, read_jsonl, require_text
from common.data.samplers import class_balanced_weights, oversample_indices, rare_label_weights
from common.data.splits import group_split, random_split, stratified_split
from common.data.vocab import LabelVocab, TokenVocab
from common.errors import ConfigError, DataError


def _text(rec):
    return require_text(rec.get("text"), "text")


def test_jsonl_error_names_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "ok"}\n\n{"text": ""}\n{bad json\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_jsonl(p, _text)
    assert str(e.value) == f"{p}:3: field 'text' is empty"


def test_jsonl_skip_counts_bad_records(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "ok"}\n{"text": ""}\n{bad json\n[1]\n{"text": "fine"}\n', encoding="utf-8")
    bad = BadRecords()
    assert read_jsonl(p, _text, on_bad_record="skip", bad=bad) == ["ok", "fine"]
    assert bad.count == 3
    assert bad.examples[1].startswith(f"{p}:3: invalid JSON")
    assert bad.examples[2] == f"{p}:4: expected a JSON object, got list"


def test_missing_file_and_bad_mode(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="on_bad_record"):
        read_jsonl(tmp_path / "missing.jsonl", on_bad_record="ignore")


def test_csv_missing_and_unknown_columns(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("posting_id,title\n1,a\n2,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r":1: missing column\(s\) label_group"):
        read_csv(p, required=["posting_id", "label_group"])
    with pytest.raises(DataError, match=r":1: unknown column\(s\) title"):
        read_csv(p, required=["posting_id"], allowed=["posting_id"])
    with pytest.raises(DataError) as e:
        read_csv(p, ["posting_id", "title"], lambda r: require_text(r["title"], "title"))
    assert str(e.value) == f"{p}:3: field 'title' is empty"


def test_random_split_is_deterministic_and_complete():
    a = random_split(100, [0.8, 0.1, 0.1], seed=3)
    b = random_split(100, [0.8, 0.1, 0.1], seed=3)
    assert [list(x) for x in a] == [list(x) for x in b]
    assert sorted(np.concatenate(a).tolist()) == list(range(100))
    assert [len(x) for x in a] == [80, 10, 10]
    with pytest.raises(ConfigError, match="sum to 1"):
        random_split(10, [0.5, 0.4], 0)


def test_group_split_keeps_groups_whole():
    groups = [i // 3 for i in range(90)]
    parts = group_split(groups, [0.7, 0.15, 0.15], seed=0)
    seen = [{groups[i] for i in p} for p in parts]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sum(len(p) for p in parts) == 90


def test_stratified_split_keeps_proportions():
    labels = ["a"] * 80 + ["b"] * 20
    train, test = stratified_split(labels, [0.5, 0.5], seed=0)
    assert sum(labels[i] == "b" for i in train) == 10


def test_vocabularies(tmp_path):
    v = LabelVocab.from_records([["x", "y"], ["y"], ["z"]])
    assert v.labels == ["y", "x", "z"]
    assert v.multi_hot(["z", "y"]).tolist() == [1, 0, 1]
    with pytest.raises(DataError, match="unknown label 'w'"):
        v.encode("w")
    v.save(tmp_path / "labels.json")
    assert LabelVocab.load(tmp_path / "labels.json").labels == v.labels
    tv = TokenVocab.build([["a", "b", "a"], ["a", "c"]], min_freq=2)
    assert tv.encode(["a", "b", "zz"]) == [2, 1, 1]


def test_samplers():
    w = class_balanced_weights(["a", "a", "a", "b"])
    assert w.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    m = np.array([[1, 0], [1, 0], [1, 0], [1, 1], [0, 0]])
    assert rare_label_weights(m, power=1.0).tolist() == pytest.approx([1, 1, 1, 4, 1])
    idx = oversample_indices(m, min_count=3)
    assert (m[idx, 1] == 1).sum() == 3 and len(idx) == 7


def test_images(tmp_path):
    good = tmp_path / "g.png"
    Image.new("RGB", (4, 4), "red").save(good)
    assert load_image(good).size == (4, 4)
    with pytest.raises(DataError, match="missing image"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(DataError, match=r"bad.jpg: corrupt image"):
        load_image(bad)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:30])
    with pytest.raises(DataError, match="corrupt image"):
        load_image(trunc)


def test_fingerprint_tracks_content_and_order():
    recs = [{"a": 1, "b": "x"}, {"a": 2}]
    assert fingerprint(recs) == fingerprint([{"b": "x", "a": 1}, {"a": 2}])
    assert fingerprint(recs) != fingerprint(recs[::-1])
    assert len(fingerprint(recs)) == 16
    assert fingerprint([json.loads('{"t": "新车"}')]) != fingerprint([{"t": "新"}])


def test_stratified_split_with_a_small_held_out_part_falls_back_instead_of_failing():
    labels = [str(i % 5) for i in range(40)]
    parts = stratified_split(labels, [0.95, 0.05], seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(40)) and len(parts[1]) == 2
