"""Training from the team's files: a FlagEmbedding JSONL (``data=flag_jsonl``, what ``retrieval.mine`` writes)
trains the bi-encoder on the CLI and beats the same tower untrained on held-out queries; a query/gallery JSONL
with other key names reads through ``data.fields_map``; ``retrieval.index`` / ``retrieval.match`` run zero-shot."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from common.errors import ConfigError, DataError
from retrieval.data import DataConfig, RetrievalDataModule, load_catalog, read_query_gallery
from retrieval.data.flag import read_flag_catalog
from tests.conftest import run_cli
from tests.retrieval.conftest import compose_cfg

# Small enough for a CPU test, big enough to learn: 200 products in pairs -> 200 queries, 2 epochs.
N_GROUPS = 200
TRAIN = ["data.batch_size=32", "data.train_group_size=4", "trainer.max_epochs=2", "callbacks.early_stopping=null",
         "optim.lr=0.002", "monitor.metric=val/mrr", "callbacks.progress_bar=null", "logger=csv"]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def products(tmp_path_factory) -> Path:
    from retrieval import synth

    return synth.ensure(tmp_path_factory.mktemp("flag_synth"), n_groups=N_GROUPS, min_per_group=2, max_per_group=2,
                        image_size=16, seed=0)


@pytest.fixture(scope="module")
def mined(products, tmp_path_factory) -> Path:
    """``{query, pos}`` rows of the synthetic products (query: a group's first title, pos: the other) with hard
    negatives mined as ``retrieval.mine`` mines them (its ``mine_texts``, a tiny untrained text tower)."""
    import torch

    from common import io
    from retrieval.models.text import TextTower
    from retrieval.negatives import mine_texts

    groups = defaultdict(list)
    with products.open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            groups[r["label_group"]].append(r["title"])
    rows = [{"query": t[0], "pos": t[1:], "neg": []} for t in groups.values()]
    torch.manual_seed(0)
    tower = TextTower(name_or_path=None, max_length=32).eval()
    with torch.no_grad():
        out = mine_texts(rows, [t for r in rows for t in r["pos"]], lambda x: tower(x).numpy(),
                         range_for_sampling=(2, 50), negative_number=3, score_ceiling=None, seed=0)
    path = tmp_path_factory.mktemp("flag_mined") / "mined.jsonl"
    io.write_jsonl(path, out)
    return path


# ------------------------------------------------------------------ reading the file
def _hand_made(tmp_path: Path) -> Path:
    return _write_jsonl(tmp_path / "hand.jsonl", [
        {"query": "sony turntable", "pos": ["Sony PS-LX350H"], "neg": ["bose speaker"]},
        {"query": "bose am5", "pos": ["bose speaker", "Bose AM-5"], "neg": ["Sony PS-LX350H", "lg fridge"],
         "prompt": "Q: "},
        {"query": "sony lx350", "pos": ["Sony PS-LX350H"], "neg": []},  # shares a positive with record 0
        {"query": "lg microwave", "pos": ["LG MS-2021"], "neg": ["lg fridge"]},
        {"query": "panasonic tv", "pos": ["Panasonic TX-40"], "neg": ["lg fridge"]},
        {"query": "apple ipad", "pos": ["iPad 10.9"], "neg": ["lg fridge"]},
    ])


def test_flag_catalog_queries_passages_groups_and_prompts(tmp_path):
    flag = read_flag_catalog(_hand_made(tmp_path), query_prompt="Represent: ", passage_prompt="P: ")
    cat = flag.catalog
    assert cat.ids[:6] == [f"q:{k}" for k in range(6)] and cat.side == ["a"] * 6 + ["b"] * 7
    # every distinct pos/neg text once, in order of first appearance
    assert cat.titles[6:] == ["P: Sony PS-LX350H", "P: bose speaker", "P: Bose AM-5", "P: lg fridge",
                              "P: LG MS-2021", "P: Panasonic TX-40", "P: iPad 10.9"]
    assert cat.titles[0] == "Represent: sony turntable" and cat.titles[1] == "Q: bose am5"  # the record's own prompt
    assert flag.positives[1] == [7, 8] and flag.negatives[1] == [6, 9] and flag.negatives[2] == []
    g = cat.groups
    assert g[0] == g[2] == g[6]  # two queries with one positive: one group
    assert g[1] == g[7] == g[8] != g[0]
    assert len({g[9], g[0], g[1], g[3]}) == 4  # a passage that is nobody's positive stands alone


def test_group_of_one_positive_and_negatives_repeated_when_short(tmp_path):
    """train_group_size=4: each training query gets its record's positive and 3 of its own negatives, the
    one-negative records repeating theirs (FlagEmbedding's rule), never random passages."""
    cfg = DataConfig(source="flag_jsonl", path=str(_hand_made(tmp_path)), train_group_size=4, split=[0.5, 0.25, 0.25])
    dm = RetrievalDataModule(cfg)
    flag = read_flag_catalog(cfg.path)
    assert len(dm.splits["val"].gallery) == 7  # held-out queries are ranked against every passage of the file
    train = dm.train_set
    assert train.anchors and all(dm.catalog.side[a] == "a" for a in train.anchors)
    for k, a in enumerate(train.anchors):
        anchor, pos, *negs = train[k]
        assert anchor["idx"] == a and pos["idx"] in flag.positives[a] and len(negs) == 3
        own = [j for j in flag.negatives[a] if dm.catalog.groups[j] != dm.catalog.groups[a]]
        if own:
            assert {n["idx"] for n in negs} <= set(own)
        if len(own) == 1:
            assert [n["idx"] for n in negs] == own * 3


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "invalid JSON (Expecting property name enclosed in double quotes at column 2)"),
    ('{"query": "a", "pos": []}', "field 'pos' must be a non-empty list of non-empty strings"),
    ('{"query": "", "pos": ["x"]}', "field 'query' is empty"),
    ('{"query": "a", "pos": ["x"], "neg": "y"}', "field 'neg' must be a list of non-empty strings"),
    ('{"query": "a", "pos": ["x"], "prompt": 3}', "field 'prompt' must be a string, got int"),
])
def test_bad_records_are_file_line_errors(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "ok", "pos": ["p"], "neg": ["n"]}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_flag_catalog(path)
    assert str(e.value) == f"{path}:2: {message}"
    assert read_flag_catalog(path, on_bad_record="skip").catalog.ids == ["q:0", "p:0", "p:1"]  # skipped, counted


# ------------------------------------------------------------------ training on the CLI
def test_train_cli_bad_record_one_line_exit_2(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "ok", "pos": ["p"]}\n{"query": "a", "pos": ["x"], "neg": [""]}\n', encoding="utf-8")
    r = run_cli("-m", "retrieval.train", "data=flag_jsonl", f"data.path={path}", "logger=none",
                f"paths.log_dir={tmp_path / 'logs'}", timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    err = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert err == [f"error: {path}:2: field 'neg' must be a list of non-empty strings"], r.stderr[-2000:]
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_train_cli_on_mined_file_beats_the_untrained_tower(mined, tmp_path):
    import lightning as L

    from common.config import validate
    from retrieval import scoring
    from retrieval.build import SCHEMAS, build

    out = tmp_path / "run"
    r = run_cli("-m", "retrieval.train", "data=flag_jsonl", f"data.path={mined}", *TRAIN, f"hydra.run.dir={out}",
                f"paths.log_dir={tmp_path / 'logs'}", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    tuned = json.loads((out / "metrics.json").read_text())
    # the same towers, same seed, never trained, scored on the same held-out test queries
    cfg = compose_cfg(tmp_path, None, "data=flag_jsonl", f"data.path={mined}", *TRAIN)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    GlobalHydra.instance().clear()
    validate(cfg, SCHEMAS)
    L.seed_everything(cfg.seed)
    module, dm = build(cfg)
    assert module.net.image is None  # the flag file is text: the tiny model's image tower is dropped
    test = dm.splits["test"]
    passages = {t for line in mined.read_text().splitlines() for r in [json.loads(line)] for t in (*r["pos"], *r["neg"])}
    assert len(test.queries) >= 25 and len(test.gallery) == len(passages)  # every passage of the file
    zero, _ = scoring.score_split(module.embed_split(dm, "test"), test, dm.catalog, "test/")
    # measured: MRR 0.663 vs 0.432, recall@1 0.484 vs 0.290 on 31 held-out queries x 200 passages
    assert tuned["test/mrr"] >= zero["test/mrr"] + 0.15, (tuned, zero)
    assert tuned["test/recall_at_1"] >= zero["test/recall_at_1"] + 0.1, (tuned, zero)


# ------------------------------------------------------------------ query/gallery with a field mapping
def test_query_gallery_reads_renamed_keys_through_fields_map(tmp_path):
    q = _write_jsonl(tmp_path / "q.jsonl", [{"sku": 1, "name": "red shoe", "label": "g1"},
                                            {"sku": 2, "name": "blue hat", "label": "g2"}])
    g = _write_jsonl(tmp_path / "g.jsonl", [{"sku": "x", "name": "Red Shoe 42", "label": "g1", "pic": None},
                                            {"sku": "y", "name": "Blue Hat", "label": "g2"}])
    fmap = {"id": "sku", "title": "name", "group": "label", "image": "pic"}
    cat, split = read_query_gallery(q, g, fields_map=fmap)
    assert cat.ids == ["q:1", "q:2", "g:x", "g:y"] and cat.titles[2] == "Red Shoe 42"
    assert cat.groups == ["g1", "g2", "g1", "g2"] and split.relevant(cat) == [{0}, {1}]
    cfg = DataConfig(source="query_gallery", path=str(q), gallery=str(g), fields_map=fmap)
    assert load_catalog(cfg)[0].ids == cat.ids  # the data node passes it through
    with pytest.raises(DataError) as e:
        read_query_gallery(q, g)  # without the mapping: the default keys are missing, at the first line
    assert str(e.value) == f"{q}:1: missing field 'id'"
    with pytest.raises(DataError) as e:
        read_query_gallery(q, g, fields_map={"id": "sku", "title": "title", "group": "label"})
    assert str(e.value) == f"{q}:1: field 'title' must be a string, got NoneType"
    with pytest.raises(ConfigError, match=r"^data\.fields_map\.name: unknown field \(expected one of id, title"):
        read_query_gallery(q, g, fields_map={"name": "title"})


# ------------------------------------------------------------------ zero-shot index and match
def test_zero_shot_index_and_match_from_config_alone(products, tmp_path):
    import faiss

    from common.compose import compose_run
    from retrieval import index, match
    from retrieval.build import zero_shot_module
    from retrieval.data import read_shopee
    from retrieval.embed import embed_catalog
    from tests.retrieval.conftest import CONF

    cfg = compose_run(CONF, ["model=tiny", "data=shopee", f"data.path={products}"], tmp_path / "index", "index")
    GlobalHydra.instance().clear()
    assert cfg.ckpt is None
    index._main(cfg)
    cat = read_shopee(products)
    built = faiss.read_index(str(tmp_path / "index" / "index.faiss"))
    assert built.ntotal == len(cat) and (tmp_path / "index" / "index.ids.txt").read_text().split() == cat.ids
    emb = embed_catalog(zero_shot_module(cfg), cat, range(len(cat)))  # the same untrained towers (seeded)
    d, ids = built.search(np.stack([emb[i] for i in range(len(cat))]), 1)
    assert np.allclose(d[:, 0], 1.0, atol=1e-4) and (ids[:, 0] == np.arange(len(cat))).mean() >= 0.95

    mcfg = compose_run(CONF, ["model=tiny", f"input={products}", "threshold=0.99", "at_least=2"], tmp_path / "match",
                       "match")
    GlobalHydra.instance().clear()
    match._main(mcfg)
    lines = (tmp_path / "match" / "submission.csv").read_text().splitlines()
    matches = {pid: m.split() for pid, m in (ln.split(",") for ln in lines[1:])}
    assert list(matches) == cat.ids and all(m[0] == pid and len(m) >= 2 for pid, m in matches.items())

    bare = compose_run(CONF, [f"input={products}"], tmp_path / "bare", "match")  # no ckpt, no tower named
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match=r"^model\.image\.arch: required without a checkpoint"):
        match._main(bare)
