"""The pieces of the ingest / captions pipeline on hand-made cases: brand spellings, the record formats (LLaVA
``.json`` arrays, records without a caption), token limits, brand statistics, and the image fetcher against
real loopback HTTP servers (404, a 503 that retries into a 200, a slow server, the per-host limit)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO

import pytest
from omegaconf import OmegaConf
from PIL import Image

from common.data.records import read_json_records
from common.errors import ConfigError, DataError
from vlm.annotation.prompts import CaptionPrompt
from vlm.brands import BrandNames, brand_stats
from vlm.brands import main as brands_main
from vlm.caption_clean import CleanSettings, Tokens, clean_tokens
from vlm.data import read_records
from vlm.ingestion.fetch import Fetcher, ImageCache, Rejected
from vlm.schemas import DataSchema, FetchSchema


def png_bytes(color=(200, 10, 10)) -> bytes:
    buf = BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


def test_brand_spellings_fold_into_one_name():
    names = BrandNames({"Dolce & Gabbana": ["D&G", "DG"]}).fit(["acme", "ACME", " Acme  ", "Acme", "Acme", "ＡＣＭＥ", "bolt", None, float("nan"), ""])
    assert names("ACME") == names("  acme ") == names("ＡＣＭＥ") == "Acme"  # most frequent spelling (NFKC folds the full-width one)
    assert names("bolt") == "bolt" and names("Bolt") == "bolt"
    assert names("d&g") == names("Dolce   &   gabbana") == names("DG") == "Dolce & Gabbana"  # aliases
    assert names(None) is None and names("") is None and names(float("nan")) is None and names("--") is None
    assert names("Never Seen") == "Never Seen"
    with pytest.raises(DataError, match="'DG' is listed under both 'Dolce & Gabbana' and 'Dunegear'"):
        BrandNames({"Dolce & Gabbana": ["DG"], "Dunegear": ["DG"]})


def test_llava_json_arrays_and_records_without_a_caption(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    llava = [
        {"id": "1", "image": "a.png", "brand": "Acme",
         "conversations": [{"from": "human", "value": "<image>\nDescribe it."}, {"from": "gpt", "value": "An Acme bag."}]},
        {"id": "2", "image": "a.png", "brand": None,
         "conversations": [{"from": "human", "value": "<image>\nDescribe it."}, {"from": "gpt", "value": "A plain bag."}]},
    ]
    (tmp_path / "train.json").write_text(json.dumps(llava, indent=2))
    cfg = OmegaConf.structured(DataSchema)
    recs = read_records(tmp_path / "train.json", None, cfg)
    assert [(r.id, r.brand, r.kind, r.caption) for r in recs] == [("1", "Acme", "logo", "An Acme bag."), ("2", None, "none", "A plain bag.")]
    # a bad element is named by the line it starts on
    bad = llava + [{"id": "3", "image": "a.png", "conversations": [{"from": "human", "value": "hi"}]}]
    (tmp_path / "bad.json").write_text(json.dumps(bad, indent=2))
    text = json.dumps(bad, indent=2).split("\n")
    line = [i for i, t in enumerate(text, 1) if t == "  {"][2]
    with pytest.raises(DataError, match=rf"bad\.json:{line}: conversation has no assistant \(gpt\) turn$"):
        read_records(tmp_path / "bad.json", None, cfg)
    # records without a caption: training refuses them with file:line, the readers that need none take them
    (tmp_path / "nocap.jsonl").write_text('{"id": "1", "image": "a.png", "brand": "Acme", "caption": "An Acme bag."}\n'
                                          '{"id": "2", "image": "a.png", "brand": "Acme"}\n')
    with pytest.raises(DataError, match=r"nocap\.jsonl:2: record needs 'caption' or 'conversations'$"):
        read_records(tmp_path / "nocap.jsonl", None, cfg)
    recs = read_records(tmp_path / "nocap.jsonl", None, cfg, need_caption=False)
    assert [r.caption for r in recs] == ["An Acme bag.", None]
    assert recs[1].prompt_messages == [{"role": "user", "content": "<image>\nDescribe the product in the image."}]
    # the generic reader: JSON array and JSONL give the same rows; a duplicate id fails at its line
    (tmp_path / "dup.json").write_text('[\n{"id": 1},\n{"id": 2},\n{"id": 1}\n]\n')
    with pytest.raises(DataError, match=r"dup\.json:4: duplicate id '1' \(first seen on line 2\)"):
        read_json_records(tmp_path / "dup.json", unique="id")
    (tmp_path / "open.json").write_text('[\n{"id": 1},\n')
    with pytest.raises(DataError, match=r"open\.json:3: invalid JSON \(the array is not closed with '\]'\)"):
        read_json_records(tmp_path / "open.json")


def test_token_limits_replace_the_character_limit():
    tokens = Tokens()
    assert tokens.count("A red bag, by Acme.") == 7 and tokens.count("红色的包。") == 5
    long = " ".join(f"Sentence {i} about the Acme bag." for i in range(28))  # 7 tokens a sentence, 885 characters
    assert tokens.count(long) == 196 and len(long) == 885 > CleanSettings().max_chars
    out, flags = clean_tokens(long, CleanSettings(), 200, tokens)
    assert out == long and flags == []  # 400 characters would have cut it to a third; 200 tokens keep it whole
    out, flags = clean_tokens(long, CleanSettings(), 20, tokens)
    assert out == "Sentence 0 about the Acme bag. Sentence 1 about the Acme bag." and flags == ["truncated"]  # 12 tokens: the last stop within 20
    out, flags = clean_tokens(long + " And then the", CleanSettings(), 400, tokens)
    assert out == long and flags == ["fragment"]
    assert clean_tokens("Acme Acme Acme Acme Acme.", CleanSettings(), 200, tokens) == ("", ["loop", "empty"])


def test_caption_prompt_says_only_what_is_known():
    p = CaptionPrompt("Caption the product.\n{known}", {"brand": "Brand: {value}", "title": "Title: {value}"}, "Nothing is known.", ("title", "description"))
    assert p.render("Acme", {"title": "Tote", "description": "big"}) == "Caption the product.\nBrand: Acme\nTitle: Tote"
    assert p.render(None, {}) == "Caption the product.\nNothing is known."
    with pytest.raises(ConfigError, match=r"captions.prompt: unknown field\(s\) \{label\}"):
        CaptionPrompt("{label}", {}, "")


def test_brand_statistics_of_two_files(tmp_path, capsys):
    a = [{"id": i, "brand": b} for i, b in enumerate(["Acme"] * 5 + ["Bolt"] * 2 + ["Corvo"] + [None] * 2)]
    b = [{"id": i, "brand": x} for i, x in enumerate(["Acme"] * 3 + ["Dune"] * 4)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    stats = brand_stats({"a": (Counter({"Acme": 5, "Bolt": 2, "Corvo": 1}), 2), "b": (Counter({"Acme": 3, "Dune": 4}), 0)}, 3)
    assert stats["files"]["a"] == {"records": 10, "branded": 8, "unbranded": 2, "brands": 3, "kept_brands": 1, "kept_records": 7, "dropped_records": 3}
    assert stats["files"]["b"]["kept_brands"] == 2 and stats["files"]["b"]["kept_records"] == 7
    assert stats["shared"] == ["Acme"] and stats["only"] == {"a": ["Bolt", "Corvo"], "b": ["Dune"]} and stats["shared_kept"] == ["Acme"]
    assert brands_main([str(tmp_path / "a.jsonl"), str(tmp_path / "b.json"), "--min-samples", "3", "--out", str(tmp_path / "r.md"),
                        "--plot", str(tmp_path / "r.png")]) == 0
    md = (tmp_path / "r.md").read_text()
    assert "Shared brands: 1; only in" in md and "| Acme | 5 | 3 |" in md
    assert Image.open(tmp_path / "r.png").size[0] > 100
    assert brands_main([str(tmp_path / "a.jsonl")] * 3) == 2
    assert "error: files: give one or two record files, got 3" in capsys.readouterr().err


class Host:
    """A loopback image host: /ok.png, /missing (404), /flaky.png (503 once, then the image), /slow.png; it
    records the most requests it ever had in flight at once."""

    def __init__(self, slow_s: float = 0.0):
        self.hits: Counter = Counter()
        self.active = self.peak = 0
        self.lock = threading.Lock()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                with host.lock:
                    host.hits[self.path] += 1
                    host.active += 1
                    host.peak = max(host.peak, host.active)
                    first = host.hits[self.path] == 1
                done = False
                try:
                    time.sleep(0.05 if self.path.startswith("/many") else slow_s if self.path == "/slow.png" else 0)
                    status = 404 if self.path == "/missing" else 503 if (self.path == "/flaky.png" and first) else 200
                    body = png_bytes() if status == 200 else b"{}"
                    with host.lock:  # before the answer goes out: a client that has it may send its next request
                        host.active -= 1
                    done = True
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    if not done:
                        with host.lock:
                            host.active -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_fetcher_over_http_and_files(tmp_path):
    host = Host(slow_s=1.0)
    cfg = OmegaConf.structured(FetchSchema(timeout_s=0.3, retries=1, backoff_s=0.01, per_host=2))
    f = Fetcher(ImageCache(tmp_path / "cache"), tmp_path, cfg)
    got = f.fetch(f"{host.url}/ok.png")
    assert got.path.read_bytes() == png_bytes() and got.path.name == f"{got.sha256}.png" and (got.width, got.height) == (8, 8)
    assert f.fetch(f"{host.url}/flaky.png").sha256 == got.sha256 and host.hits["/flaky.png"] == 2  # retried once
    with pytest.raises(Rejected) as e:
        f.fetch(f"{host.url}/missing")
    assert e.value.reason == "http_404" and host.hits["/missing"] == 1  # a 404 is final, not retried
    with pytest.raises(Rejected) as e:
        f.fetch(f"{host.url}/slow.png")
    assert e.value.reason == "timeout"
    (tmp_path / "a.txt").write_text("text")
    (tmp_path / "b.png").write_bytes(png_bytes((1, 2, 3)))
    reasons = {}
    for src in ("a.txt", (tmp_path / "nope.png").as_uri(), "ftp://x/y.png", "b.png", (tmp_path / "b.png").as_uri()):
        try:
            reasons[src] = f.fetch(src).sha256[:8]
        except Rejected as err:
            reasons[src] = err.reason
    assert list(reasons.values())[:3] == ["not_an_image", "missing", "unsupported_url"]
    assert reasons["b.png"] == reasons[(tmp_path / "b.png").as_uri()]  # same bytes, one cache entry
    # at most per_host requests to one host at once, however many workers
    from concurrent.futures import ThreadPoolExecutor

    while host.active:  # the timed-out requests' handlers are still asleep
        time.sleep(0.05)
    host.peak = 0
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: f.fetch(f"{host.url}/many{i}.png"), range(12)))
    assert host.peak == 2


def _ingest_cfg(tmp_path, *overrides):
    from common.compose import compose_run, conf_dir

    return compose_run(conf_dir("vlm"), [f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp_path / 'cache'}",
                                         "progress=false", "fetch.retries=0", *overrides], tmp_path / "run", name="ingest")


def test_ingest_bad_tables_fail_with_the_key_or_the_line(tmp_path):
    from vlm.ingestion.runner import run

    (tmp_path / "a.png").write_bytes(png_bytes())
    (tmp_path / "t.csv").write_text("sku,picture,brand\n1,a.png,Acme\n2,,Acme\n1,a.png,Bolt\n")
    with pytest.raises(ConfigError, match=r"columns.image: no column 'image' in .*t\.csv \(columns: sku, picture, brand\)"):
        run(_ingest_cfg(tmp_path, f"table={tmp_path / 't.csv'}", "columns.id=sku"))
    with pytest.raises(DataError, match=r"t\.csv:3: empty 'picture' \(on_bad_record=skip lists it in rejects.jsonl instead\)"):
        run(_ingest_cfg(tmp_path, f"table={tmp_path / 't.csv'}", "columns.id=sku", "columns.image=picture"))
    rep = run(_ingest_cfg(tmp_path, f"table={tmp_path / 't.csv'}", "columns.id=sku", "columns.image=picture", "on_bad_record=skip"))
    assert (rep["rows"], rep["records"], rep["reasons"]) == (3, 1, {"no_image": 1, "duplicate_id": 1})
    rejects = [json.loads(x) for x in (tmp_path / "logs" / "vlm.ingest" / "default" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["where"].rsplit(":", 1)[1], r["reason"]) for r in rejects] == [("3", "no_image"), ("4", "duplicate_id")]
    assert "first seen at" in rejects[1]["detail"] and rejects[1]["detail"].endswith("t.csv:2)")
    with pytest.raises(ConfigError, match=r"table: .*t\.xlsx: cannot tell the format from '\.xlsx'"):
        (tmp_path / "t.xlsx").write_text("")
        run(_ingest_cfg(tmp_path, f"table={tmp_path / 't.xlsx'}"))
    with pytest.raises(ConfigError, match=r"fetch.per_host: expected >= 1, got 0"):
        run(_ingest_cfg(tmp_path, f"table={tmp_path / 't.csv'}", "fetch.per_host=0"))


def test_the_class_workflow_reads_llava_json_too(tmp_path):
    from vlm.annotation.classes import load_classes
    from vlm.annotation.dataset import read_caption_items, read_items

    (tmp_path / "a.png").write_bytes(png_bytes())
    recs = [{"id": "x", "image": "a.png", "brand": "Acme", "conversations": [{"from": "human", "value": "<image>\nhi"}]},
            {"id": "y", "image": "a.png", "brand": None}]
    (tmp_path / "items.json").write_text(json.dumps(recs, indent=1))
    items = read_items(tmp_path / "items.json", load_classes(["Acme", {"name": "none", "none": True}]))
    assert [(i.id, i.label) for i in items] == [("x", "Acme"), ("y", "none")]
    caps = read_caption_items(tmp_path / "items.json")
    assert [(c.id, c.brand, c.fields) for c in caps] == [("x", "Acme", {}), ("y", None, {})]


def test_token_limits_with_a_tokenizer_folder(tmp_path):
    """``captions.tokenizer=<folder>``: counted and cut by a real Hugging Face tokenizer's offsets."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "a", "red", "bag", "by", "acme", "."])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    tokens = Tokens(str(tmp_path / "tok"))
    assert tokens.count("a red bag by acme. a red bag.") == 10
    assert clean_tokens("a red bag by acme. a red bag.", CleanSettings(), 8, tokens) == ("a red bag by acme.", ["truncated"])
    with pytest.raises(ConfigError, match=r"captions.tokenizer: '/nonexistent' is neither 'words' nor a tokenizer folder"):
        Tokens("/nonexistent")


def test_captions_preset_config_errors(tmp_path):
    from common.compose import compose_run, conf_dir
    from vlm.annotation.captions import run_captions

    def cfg(*o):
        return compose_run(conf_dir("vlm"), [f"paths.log_dir={tmp_path}", "+annotate=captions", *o], tmp_path / "run", name="annotate")

    with pytest.raises(ConfigError, match=r"data.path: required for \+annotate=captions"):
        run_captions(cfg())
    with pytest.raises(ConfigError, match=r"captions.prompt: unknown field\(s\) \{classes\}"):
        run_captions(cfg("captions.prompt='{classes}'"))
    with pytest.raises(ConfigError, match=r"captions.min_brand_samples: expected >= 1, got 0"):
        run_captions(cfg("captions.min_brand_samples=0"))
