"""Files that are wrong in one way each, written fresh into every case's temp dir (``{bad}`` in the tables).

Beside them a few good ones that a case needs to get as far as the bad one (an image, a taxonomy, ...).
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

SHOPEE_HEADER = "posting_id,image,image_phash,title,label_group\n"
GOOD_DOC = {"text": "小米SU7正式上市", "doc_label": ["新车资讯--新车上市"]}
GOOD_CAPTION = {"id": "a", "image": "ok.png", "brand": "Zorvik", "caption": "A shoe by Zorvik."}
TABLE_A = "id,name,price\n0,Sony Turntable PSLX350H,\n1,Bose Speaker AM53,399\n2,LG Microwave,\n"
TABLE_B = "id,name,price\n10,Sony PS-LX350H turntable,\n11,Bose AM5 speaker system,\n12,Panasonic fridge,\n"


def _jsonl(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows), encoding="utf-8")


def _textcls(root: Path) -> None:
    _jsonl(root / "tc_bad_json.jsonl", [GOOD_DOC, '{"text": "比亚迪海豹上市", "doc_label": ["新车资讯--新车上市"]'])
    _jsonl(root / "tc_empty_text.jsonl", [GOOD_DOC, {"text": "   ", "doc_label": ["其他"]}])
    _jsonl(root / "tc_unknown_label.jsonl", [GOOD_DOC, GOOD_DOC, {"text": "理想L6试驾", "doc_label": ["新车资讯--试驾"]}])
    _jsonl(root / "tc_label_not_text.jsonl", [GOOD_DOC, {"text": "理想L6到店", "doc_label": [1]}])
    _jsonl(root / "tc_two_docs.jsonl", [GOOD_DOC, {"text": "国足公布集训名单", "doc_label": ["其他"]}])
    (root / "taxonomy.txt").write_text("Root\t新车资讯\t其他\n新车资讯\t新车资讯--新车上市\t新车资讯--谍照\n", encoding="utf-8")
    (root / "taxonomy_child_first.txt").write_text("新车资讯--谍照\n新车资讯\n", encoding="utf-8")
    ok = "1_!_107_!_news_car_!_小米SU7正式上市_!_小米,SU7\n"
    (root / "toutiao_short.txt").write_text(ok + "2_!_103_!_news_sports\n", encoding="utf-8")
    (root / "toutiao_code.txt").write_text(ok + "2_!_105_!_news_car_!_理想L6到店_!_\n", encoding="utf-8")
    (root / "toutiao_name.txt").write_text(ok + "2_!_103_!_news_car_!_国足公布集训名单_!_\n", encoding="utf-8")
    (root / "texts.txt").write_text("小米SU7正式上市\n", encoding="utf-8")
    gbk = json.dumps({"text": "理想L6到店", "doc_label": ["其他"]}, ensure_ascii=False)  # a GBK line after a UTF-8 one
    (root / "tc_gbk.jsonl").write_bytes((json.dumps(GOOD_DOC, ensure_ascii=False) + "\n").encode() + (gbk + "\n").encode("gbk"))
    (root / "toutiao_gbk.txt").write_bytes(ok.encode() + "2_!_107_!_news_car_!_理想L6到店_!_\n".encode("gbk"))
    (root / "texts_gbk.txt").write_bytes("小米SU7正式上市\n".encode("gbk"))
    (root / "corrupt.ckpt").write_bytes(b"not a checkpoint at all")


def _vlm(root: Path) -> None:
    Image.new("RGB", (32, 32), (200, 30, 30)).save(root / "ok.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    second = {"id": "b", "brand": None, "caption": "A plain cup."}
    _jsonl(root / "v_no_image.jsonl", [GOOD_CAPTION, second])
    _jsonl(root / "v_missing_image.jsonl", [GOOD_CAPTION, {**second, "image": "gone.png"}])
    _jsonl(root / "v_corrupt_image.jsonl", [GOOD_CAPTION, {**second, "image": "corrupt.png"}])
    _jsonl(root / "v_no_caption.jsonl", [GOOD_CAPTION, {"id": "b", "image": "ok.png", "brand": None}])
    _jsonl(root / "v_llava_no_answer.jsonl", [GOOD_CAPTION, {"id": "b", "image": "ok.png", "brand": "Zorvik",
                                                             "conversations": [{"from": "human", "value": "<image>\nWhat is this?"}]}])
    _jsonl(root / "v_good.jsonl", [GOOD_CAPTION, {**second, "image": "ok.png"}])
    _jsonl(root / "v_one.jsonl", [GOOD_CAPTION])
    (root / "aliases_unknown_brand.json").write_text(json.dumps({"Acme": ["ACME Corp"]}), encoding="utf-8")
    (root / "classes_not_yaml.yaml").write_text("{not: [yaml\n", encoding="utf-8")
    (root / "classes_unknown_key.yaml").write_text("- name: Zorvik\n  colour: red\n", encoding="utf-8")
    _jsonl(root / "annotate_unknown_class.jsonl", [{"id": "a", "image": "ok.png", "brand": "Zorvik"},
                                                   {"id": "b", "image": "ok.png", "brand": "Acme"}])


def _retrieval(root: Path) -> None:
    (root / "images").mkdir(exist_ok=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(root / "images" / name)
    ok = "p1,a.png,ff,Sony X 500ml,g1\n"
    shopee = {
        "missing_image": ok + "p2,gone.png,ff,sony x 0.5L,g1\n",
        "empty_title": ok + "p2,b.png,ff,  ,g1\n",
        "duplicate_id": ok + "p1,b.png,ff,sony x 0.5L,g1\n",
        "short_row": ok + "p2,b.png,ff\n",
    }
    for name, body in shopee.items():
        (root / f"shopee_{name}.csv").write_text(SHOPEE_HEADER + body, encoding="utf-8")
    (root / "shopee_unknown_column.csv").write_text(SHOPEE_HEADER.strip() + ",colour\n" + ok.strip() + ",red\n", encoding="utf-8")
    (root / "shopee_gbk.csv").write_bytes((SHOPEE_HEADER + ok).encode() + "p2,b.png,ff,小米手环 8,g1\n".encode("gbk"))
    (root / "shopee_missing_column.csv").write_text("posting_id,image,title,label_group\np1,a.png,Sony X,g1\n", encoding="utf-8")
    rows = [f"p{g}{k},{'ab'[k]}.png,ff,item {g} photo {k},g{g}\n" for g in range(8) for k in range(2)]
    (root / "shopee_good.csv").write_text(SHOPEE_HEADER + "".join(rows), encoding="utf-8")
    no_a = root / "dm_no_table_a"
    no_a.mkdir(exist_ok=True)
    (no_a / "tableB.csv").write_text(TABLE_B, encoding="utf-8")
    (no_a / "matches.csv").write_text("tableA_id,tableB_id\n0,10\n", encoding="utf-8")
    unknown = root / "dm_unknown_id"
    unknown.mkdir(exist_ok=True)
    (unknown / "tableA.csv").write_text(TABLE_A, encoding="utf-8")
    (unknown / "tableB.csv").write_text(TABLE_B, encoding="utf-8")
    (unknown / "matches.csv").write_text("tableA_id,tableB_id\n0,10\n1,99\n", encoding="utf-8")
    good = {"query": "sony turntable", "pos": ["Sony PS-LX350H turntable"], "neg": ["Panasonic fridge"]}
    _jsonl(root / "flag_good.jsonl", [good, {**good, "query": "bose speaker", "pos": ["Bose AM5 speaker system"]}])
    _jsonl(root / "flag_bad_json.jsonl", [good, "{query: sony}"])
    _jsonl(root / "flag_no_pos.jsonl", [good, {"query": "bose speaker", "neg": ["Panasonic fridge"]}])


def make_bad_inputs(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "not_json.jsonl").write_text('{"a": 1}\n{oops\n', encoding="utf-8")
    (root / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    (root / "aliases_bad.json").write_text("{not json", encoding="utf-8")
    (root / "dir.jsonl").mkdir(exist_ok=True)
    _textcls(root)
    _vlm(root)
    _retrieval(root)
