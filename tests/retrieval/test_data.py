"""Readers, the synthetic generator, splits, mining and matching on hand-made cases."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from common.errors import DataError
from retrieval import synth
from retrieval.data import (
    UniqueGroupBatchSampler,
    all_split,
    ditto_fields,
    make_splits,
    read_deepmatcher,
    read_flag_jsonl,
    read_shopee,
)
from retrieval.mine import parse_range
from retrieval.negatives import mine_negatives, mine_texts
from retrieval.scoring import matches_at

HEADER = "posting_id,image,image_phash,title,label_group\n"


def _shopee(tmp_path, body: str, header: str = HEADER, images=("a.png", "b.png", "c.png")):
    (tmp_path / "images").mkdir(exist_ok=True)
    from PIL import Image

    for name in images:
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / name)
    f = tmp_path / "train.csv"
    f.write_text(header + body, encoding="utf-8")
    return f


def test_shopee_reads_good_file(tmp_path):
    f = _shopee(tmp_path, "p1,a.png,ff,Sony X 500ml,g1\np2,b.png,ff,sony x 0.5L,g1\np3,c.png,ff,Other,g2\n")
    cat = read_shopee(f)
    assert cat.ids == ["p1", "p2", "p3"] and cat.groups == ["g1", "g1", "g2"]
    assert cat.images[0].endswith("images/a.png")


@pytest.mark.parametrize(
    "body,header,expected",
    [
        ("p1,a.png,ff,T,g1\np1,b.png,ff,U,g1\n", HEADER, ":3: duplicate posting_id 'p1' (first seen on line 2)"),
        ("p1,a.png,ff,T,g1\np2,b.png,ff,  ,g1\n", HEADER, ":3: field 'title' is empty"),
        ("p1,a.png,ff,T,g1,x\n", HEADER.strip() + ",colour\n", ":1: unknown column(s) colour"),
        ("p1,a.png,ff,T,g1\np2,missing.png,ff,U,g1\n", HEADER, ":3: missing image"),
    ],
    ids=["duplicate_id", "empty_title", "unknown_column", "missing_image"],
)
def test_shopee_bad_input_names_file_and_line(tmp_path, body, header, expected):
    f = _shopee(tmp_path, body, header)
    with pytest.raises(DataError) as e:
        read_shopee(f)
    assert str(e.value).startswith(str(f))
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_shopee_skip_mode_counts(tmp_path):
    f = _shopee(tmp_path, "p1,a.png,ff,T,g1\np2,b.png,ff,,g1\np3,c.png,ff,V,g1\n")
    assert read_shopee(f, on_bad_record="skip").ids == ["p1", "p3"]


def test_synthetic_generator_is_deterministic_and_noisy(tmp_path):
    a = synth.generate(tmp_path / "a", n_groups=40, seed=3, progress=False)
    b = synth.generate(tmp_path / "b", n_groups=40, seed=3, progress=False)
    assert a.read_text() == b.read_text()
    assert (a.parent / "images" / "train_000000.png").read_bytes() == (b.parent / "images" / "train_000000.png").read_bytes()
    cat = read_shopee(a)
    assert len(set(cat.groups)) == 40 and len(cat) >= 80
    text = " ".join(cat.titles)
    assert any(n in text for n in synth.NOISE)  # shop noise
    meta = [json.loads(x) for x in (a.parent / "products_meta.jsonl").read_text().splitlines()]
    fams = {}
    for m in meta:
        fams.setdefault((m["brand"], m["type"]), []).append(m)
    assert any(len(v) > 1 for v in fams.values())  # hard negatives: same brand+type, other model/size


def test_group_split_never_straddles(tmp_path):
    cat = read_shopee(synth.generate(tmp_path / "s", n_groups=30, seed=1, progress=False))
    sp = make_splits(cat, [0.6, 0.2, 0.2], 0)
    sets = [{cat.groups[i] for i in sp[k].pool} for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(len(sp[k].pool) for k in sp) == len(cat)


def _deepmatcher(tmp_path):
    d = tmp_path / "dm"
    d.mkdir()
    (d / "tableA.csv").write_text("id,name,price\n0,Sony Turntable PSLX350H,\n1,Bose Speaker AM53,399\n2,LG Microwave,\n")
    (d / "tableB.csv").write_text("id,name,price\n10,Sony PS-LX350H turntable,\n11,Bose AM5 speaker system,\n12,Panasonic fridge,\n")
    (d / "matches.csv").write_text("tableA_id,tableB_id\n0,10\n1,11\n")
    return d


def test_deepmatcher_reader_and_whole_folder_split(tmp_path):
    cat = read_deepmatcher(_deepmatcher(tmp_path))
    assert cat.groups[cat.index["a:0"]] == cat.groups[cat.index["b:10"]]
    assert cat.groups[cat.index["a:2"]] != cat.groups[cat.index["b:12"]]
    sp = all_split(cat)
    assert [cat.ids[i] for i in sp.queries] == ["a:0", "a:1"]  # only A records with a match
    assert sorted(cat.ids[i] for i in sp.gallery) == ["b:10", "b:11", "b:12"]
    assert sp.relevant(cat) == [{0}, {1}]


def test_deepmatcher_unknown_match_id(tmp_path):
    d = _deepmatcher(tmp_path)
    (d / "matches.csv").write_text("tableA_id,tableB_id\n0,99\n")
    with pytest.raises(DataError, match="tableB_id '99' is not in tableB.csv"):
        read_deepmatcher(d)


def test_ditto_fields():
    assert ditto_fields("COL name VAL sony a COL description VAL x y COL price VAL ") == {
        "name": "sony a", "description": "x y", "price": ""}


def test_flag_jsonl_validation(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"query": "a", "pos": ["b"], "neg": ["c"]}\n{"query": "a", "pos": []}\n')
    with pytest.raises(DataError, match=r"t.jsonl:2: field 'pos' must be a non-empty list"):
        read_flag_jsonl(f)


def test_mining_respects_window_positives_query_and_ceiling():
    # candidates on a circle: similarity to the query decreases with the index
    angles = np.linspace(0, np.pi / 2, 8)
    c = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    q = c[:1].copy()
    negs = mine_negatives(q, c, positives=[{2}], exclude=[{0}], range_for_sampling=(1, 5), negative_number=3, seed=0)
    assert sorted(negs[0]) == [1, 3, 4]  # ranks 1..5 minus the query (0) and its positive (2)
    topped = mine_negatives(q, c, [{2}], [{0}], (1, 5), negative_number=6, seed=0)
    assert {1, 3, 4} <= set(topped[0]) and 0 not in topped[0] and 2 not in topped[0] and len(topped[0]) == 6
    capped = mine_negatives(q, c, [{2}], [{0}], (1, 8), negative_number=3, score_ceiling=0.8, seed=0)
    assert all(float(c[j] @ q[0]) <= 0.8 for j in capped[0])
    assert parse_range("2-200") == (2, 200)


def test_mine_texts_excludes_query_and_positives():
    pool = ["q", "p", "n1", "n2", "n3"]
    vecs = {"q": [1, 0], "p": [0.99, 0.1], "n1": [0.9, 0.4], "n2": [0.5, 0.8], "n3": [0, 1]}
    enc = lambda texts: np.array([vecs[t] for t in texts], np.float32)  # noqa: E731
    rows = mine_texts([{"query": "q", "pos": ["p"], "neg": []}], pool, enc, range_for_sampling=(1, 5), negative_number=3)
    assert sorted(rows[0]["neg"]) == ["n1", "n2", "n3"] and rows[0]["pos"] == ["p"]


def test_matches_threshold_and_at_least_two():
    ids = ["a", "b", "c"]
    scores = np.array([[1.0, 0.9, 0.2], [1.0, 0.9, 0.1], [1.0, 0.3, 0.2]])
    nn = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1]])
    m = matches_at(ids, scores, nn, 0.5)
    assert m == {"a": ["a", "b"], "b": ["b", "a"], "c": ["c"]}
    assert matches_at(ids, scores, nn, 0.5, at_least=2)["c"] == ["c", "a"]


def test_pair_scores_on_labelled_pairs_cover_unmatched_records(tmp_path):
    from retrieval.eval import pair_scores_from_files

    d = _deepmatcher(tmp_path)
    (d / "test.csv").write_text("tableA_id,tableB_id,label\n0,10,1\n2,12,0\n1,11,1\n2,10,0\n")
    cat = read_deepmatcher(d)
    vec = {"a:0": [1, 0], "b:10": [1, 0], "a:1": [0, 1], "b:11": [0.6, 0.8], "a:2": [0.8, 0.6], "b:12": [0.8, 0.6]}
    emb = {cat.index[k]: np.array(v, np.float32) for k, v in vec.items()}
    m = pair_scores_from_files(d, cat, emb, threshold=0.7)
    # predicted matches: (0,10) 1.0, (1,11) 0.8, (2,12) 1.0 (a false positive); (2,10) 0.8 (false positive)
    assert m["pair_recall"] == 1.0 and m["pair_precision"] == 0.5


def test_query_gallery_jsonl_through_the_data_config(tmp_path):
    from common.errors import ConfigError, DataError
    from retrieval.data import DataConfig, all_split, load_catalog

    q, g = tmp_path / "queries.jsonl", tmp_path / "gallery.jsonl"
    q.write_text('{"id": 1, "title": "Sony WH-1000XM4", "group": "s1"}\n'
                 '{"id": 2, "title": "Apple iPad 10.2 64GB", "group": "a1"}\n', encoding="utf-8")
    g.write_text('{"id": 1, "title": "sony wh1000xm4 headphones", "group": "s1"}\n'
                 '{"id": 2, "title": "ipad 10.2in 64 GB", "group": "a1"}\n'
                 '{"id": 3, "title": "Bose QC45", "group": "b9"}\n', encoding="utf-8")
    cat, _ = load_catalog(DataConfig(source="query_gallery", path=str(q), gallery=str(g)))
    assert cat.ids == ["q:1", "q:2", "g:1", "g:2", "g:3"] and cat.side == ["a", "a", "b", "b", "b"]
    split = all_split(cat)
    assert split.queries.tolist() == [0, 1] and split.gallery.tolist() == [2, 3, 4]
    assert [sorted(r) for r in split.relevant(cat)] == [[0], [1]]  # positions in the gallery
    with pytest.raises(ConfigError, match=r"^data\.gallery: required for data\.source=query_gallery"):
        load_catalog(DataConfig(source="query_gallery", path=str(q)))
    g.write_text('{"id": 1, "title": "", "group": "s1"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{g}:1: "):
        load_catalog(DataConfig(source="query_gallery", path=str(q), gallery=str(g)))


# (groups of the items, the anchors: item indices, batch size); each layout leaves a different remainder
SAMPLER_LAYOUTS = [
    ([f"g{i}" for i in range(10)], list(range(10)), 4),            # all distinct: 4 + 4 + a last batch of 2
    ([f"g{i}" for i in range(8)], list(range(8)), 4),              # all distinct, divides evenly
    ([f"g{i}" for i in range(9)], list(range(9)), 4),              # a last single anchor (no batch of 1)
    ([f"g{i // 5}" for i in range(15)], list(range(15)), 4),       # 3 groups x 5: never 4 distinct groups
    (["g"] * 6, list(range(6)), 2),                                # one group: no batch at all
    ([f"g{i % 7}" for i in range(40)], list(range(0, 40, 2)), 3),  # skewed: anchors on 4 of 7 groups, repeats
    ([f"g{i // 2}" for i in range(50)], list(range(50)), 8),       # pairs
    ([f"g{i}" for i in range(5)], list(range(5)), 8),              # fewer anchors than one batch
]


@pytest.mark.parametrize("groups, anchors, batch_size", SAMPLER_LAYOUTS)
@pytest.mark.parametrize("world", [1, 2, 3])
def test_unique_group_sampler_len_matches_iteration(groups, anchors, batch_size, world):
    samplers = [UniqueGroupBatchSampler(anchors, groups, batch_size, seed=0,
                                        sampler=SimpleNamespace(rank=r, num_replicas=world) if world > 1 else None)
                for r in range(world)]
    for _epoch in range(4):  # every epoch shuffles anew; len is the coming epoch's count
        lens = [len(s) for s in samplers]
        per_rank = [list(s) for s in samplers]
        assert [len(b) for b in per_rank] == lens
        assert len(set(lens)) == 1  # every rank steps the same number of times
        for step in zip(*per_rank, strict=True):
            assert len({len(b) for b in step}) == 1  # equal shapes across ranks
            together = [k for b in step for k in b]
            assert len({groups[anchors[k]] for k in together}) == len(together)  # no two anchors share a group


def test_deepmatcher_image_column_names_each_records_photo(tmp_path):
    d = _deepmatcher(tmp_path)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(d / "p.png")
    (d / "tableA.csv").write_text("id,image,name\n0,p.png,Sony Turntable PSLX350H\n1,p.png,Bose Speaker AM53\n2,p.png,LG\n")
    (d / "tableB.csv").write_text("id,image,name\n10,p.png,Sony PS-LX350H\n11,p.png,Bose AM5\n12,p.png,Panasonic\n")
    cat = read_deepmatcher(d)
    assert cat.has_images and cat.images[0] == str(d / "p.png")
    assert cat.titles[0] == "Sony Turntable PSLX350H"  # the text column is still the name, not the photo
    (d / "tableB.csv").write_text("id,image,name\n10,p.png,Sony PS-LX350H\n11,gone.png,Bose AM5\n12,p.png,Panasonic\n")
    with pytest.raises(DataError, match=r"tableB\.csv:3: missing image .*gone\.png"):
        read_deepmatcher(d)
