"""Bad input -> one clear line naming the file (and line) or the key; non-zero exit from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from common.errors import DataError
from tests.conftest import run_cli


def _dataset(tmp_path: Path, rows: list[dict]) -> Path:
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "ok.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GOOD = {"id": "a", "image": "ok.png", "brand": "Zorvik", "caption": "A shoe by Zorvik."}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"id": "b", "image": "missing.png", "brand": None, "caption": "A cup."}, r"train.jsonl:2: .*missing.png: missing image"),
        ({"id": "b", "image": "corrupt.png", "brand": None, "caption": "A cup."}, r"train.jsonl:2: .*corrupt.png: corrupt image"),
        ({"id": "b", "image": "ok.png", "conversations": [{"from": "human", "value": "<image>\nDescribe."}]},
         r"train.jsonl:2: conversation has no assistant \(gpt\) turn"),
        ({"id": "b", "image": "ok.png", "brand": "Zorvik", "kind": "none", "caption": "A cup."}, r"train.jsonl:2: kind 'none' with brand"),
        ({"id": "b", "image": "ok.png", "caption": "a bag a bag a bag a bag a bag"}, r"train.jsonl:2: caption dropped by cleaning"),
        ({**GOOD, "caption": "Another shoe by Zorvik."}, r"train.jsonl:2: duplicate id 'a' \(first seen on line 1\)"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, bad, message):
    from omegaconf import OmegaConf

    from vlm.data import read_records
    from vlm.schemas import DataSchema

    path = _dataset(tmp_path, [GOOD, bad])
    cfg = OmegaConf.structured(DataSchema)
    with pytest.raises(DataError, match=message):
        read_records(path, None, cfg, 32)
    cfg.on_bad_record = "skip"
    assert [r.id for r in read_records(path, None, cfg, 32)] == ["a"]


def test_llava_conversations_are_read(tmp_path):
    from omegaconf import OmegaConf

    from vlm.data import read_records
    from vlm.schemas import DataSchema

    row = {"id": "c", "image": "ok.png", "brand": "Zorvik",
           "conversations": [{"from": "human", "value": "What is this?"}, {"from": "gpt", "value": "A shoe by Zorvik."}]}
    (rec,) = read_records(_dataset(tmp_path, [row]), None, OmegaConf.structured(DataSchema), 32)
    assert rec.kind == "logo" and rec.caption == "A shoe by Zorvik."
    assert rec.messages[0]["content"].startswith("<image>\n") and rec.size == (32, 32)


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path):
    """Through the real command line: a missing image in a JSONL, then an unknown brand alias file."""
    path = _dataset(tmp_path, [GOOD, {"id": "b", "image": "missing.png", "brand": None, "caption": "A cup."}])
    common = ["logger=none", f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    r = run_cli("-m", "vlm.train", *common, "data=jsonl", f"data.train_file={path}", timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and last.endswith("missing.png: missing image") and f"{path}:2:" in last

    r = run_cli("-m", "vlm.generate", "--images", str(tmp_path / "corrupt.png"), "--out", str(tmp_path / "o.jsonl"),
                "--captioner", str(tmp_path))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "corrupt.png: corrupt image" in r.stderr and not (tmp_path / "o.jsonl").exists()


def test_unknown_brand_alias_file(tmp_path, vlm_cfg):
    from vlm.data import BrandCaptionData

    cfg = vlm_cfg("logger=none", f"data.brand_aliases={tmp_path / 'aliases.json'}")
    with pytest.raises(DataError, match=r"aliases.json: brand alias file not found"):
        BrandCaptionData(cfg.data, 64, cfg.paths.cache_dir)
    (tmp_path / "aliases.json").write_text(json.dumps({"Acme": ["ACME Corp"]}))
    with pytest.raises(DataError, match=r"aliases.json: aliases given for unknown brand\(s\): Acme"):
        BrandCaptionData(cfg.data, 64, cfg.paths.cache_dir)


def test_annotation_items_reject_a_repeated_id_at_its_second_line(tmp_path):
    from vlm.annotation.classes import ClassDef, ClassSet
    from vlm.annotation.dataset import read_items

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": 1, "image": "a.png", "brand": "Zorvik"}\n{"id": "1", "image": "a.png", "brand": "Zorvik"}\n')
    with pytest.raises(DataError, match=r"items.jsonl:2: duplicate id '1' \(first seen on line 1\)"):
        read_items(path, ClassSet([ClassDef("Zorvik")]))
