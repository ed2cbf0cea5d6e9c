"""The seed's pipeline end to end on a generated table of 200 products: ``vlm.ingest`` (CSV and parquet; 10 %
dead links: ``file://`` to missing files and http to a closed loopback port; 5 % files that are not images; one
brand under several spellings) -> ``vlm.annotate +annotate=captions`` against the real ``vlm.serve`` on loopback
(an in-process uvicorn serving a small teacher backend that writes brand-naming captions, loops and garbage on
cue) -> cleaning -> the brand filter -> ``vlm.train data=jsonl`` for one epoch on the tiny model. Every stage's
counts are exact and add up; ingest and annotate are SIGKILLed mid-run and re-run to the same result, without
duplicates."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import openai
import pandas as pd
import pytest
from PIL import Image

from common import run
from common.compose import compose_run, conf_dir
from tests.conftest import ROOT
from tests.vlm.live_server import LiveServer
from vlm.annotation.cache import read_rows
from vlm.annotation.captions import run_captions
from vlm.ingestion.runner import run as run_ingest

N = 200
BRANDS = ["Acme", "Bolt", "Corvo", "Dune"]
ACME_SPELLINGS = ["Acme", "ACME", "  acme ", "Akme"]  # case, spacing, and an alias (brands.aliases)
RARE = "Rarity"  # 3 products: below the >= 5 brand filter
MODEL = "teacher"


def product(i: int) -> dict:
    """Product i's row; what happens to it at every stage follows from i (see expected())."""
    if i % 10 == 9:
        brand = None  # no brand label
    elif i in (3, 13, 23):
        brand = RARE
    else:
        brand = BRANDS[i % 4]
    spelled = ACME_SPELLINGS[(i // 4) % 4] if brand == "Acme" else brand
    return {"id": f"p{i:03d}", "brand": spelled, "title": f"item {i}", "description": f"a product numbered {i}" if i % 2 else ""}


def expected() -> dict:
    """What each stage must count, derived from the rules the table and the teacher follow."""
    rows = {i: product(i) for i in range(N)}
    dead = {i for i in rows if i % 20 in (0, 1)}  # 20: 10 file:// to missing files, 10 http to a closed port
    not_image = {i for i in rows if i % 20 == 2}  # 10
    ok = [i for i in rows if i not in dead | not_image]
    reasons = {}
    for i in ok:
        b = rows[i]["brand"]
        if i % 20 == 5:
            reasons[i] = "loop"
        elif i % 20 == 6:
            reasons[i] = "garbage"
        elif i % 20 == 7 and b:
            reasons[i] = "brand_not_named"
        else:
            reasons[i] = None
    rare_left = [i for i in ok if rows[i]["brand"] == RARE and reasons[i] is None]
    for i in rare_left:
        reasons[i] = "rare_brand"
    return {"dead": dead, "not_image": not_image, "ok": ok, "reasons": reasons, "rows": rows}


class Teacher:
    """A backend for vlm.serve: reads the prompt's known fields like a teacher would and captions the product
    by its brand; item numbers ending in 5 loop, in 6 answer garbage, in 7 do not name the brand. Every answer
    ends in a fragment (cut after the last full stop), like an answer stopped by max_tokens."""

    name = MODEL

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls = 0

    def caption(self, images, prompts, *, temperature, top_p, max_new_tokens, seed=None):
        assert (temperature, top_p, max_new_tokens) == (0.1, 0.2, 200)  # the seed's sampling settings arrive
        time.sleep(self.delay)
        self.calls += len(prompts)
        out = []
        for im, p in zip(images, prompts, strict=True):
            n = int(re.search(r"Title: item (\d+)", p).group(1))
            brand = m.group(1) if (m := re.search(r"Brand: (.+)", p)) else None
            colour = "red" if im.getpixel((0, 0))[0] > 128 else "dark"
            if n % 20 == 5:
                out.append("The bag the bag the bag the bag the bag the bag.")
            elif n % 20 == 6:
                out.append("A bag ▓▒░■□◆◇ ▲△▼▽●○◎ ★☆")  # symbols, as a broken decode writes them
            elif n % 20 == 7 and brand:
                out.append(f"A {colour} product with a strap. It is well made. And the")
            elif brand:
                spelled = "AKME" if brand == "Acme" and n % 3 == 0 else brand  # the check takes the alias too
                out.append(f"A {colour} product by {spelled}, item {n}. It has a strap and a")
            else:
                out.append(f"A {colour} product, item {n}, with no brand in sight. The strap is")
        return out


class ImageHost:
    """Serves PNGs over http on loopback, slowly (delay per request), so an ingest can be killed mid-run."""

    def __init__(self, files: dict[str, bytes], delay: float):
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                time.sleep(host.delay)
                body = files.get(self.path.lstrip("/"))
                try:
                    self.send_response(200 if body is not None else 404)
                    self.send_header("Content-Length", str(len(body or b"")))
                    self.end_headers()
                    self.wfile.write(body or b"")
                except (BrokenPipeError, ConnectionResetError):  # the SIGKILLed ingest hung up
                    pass

        self.delay = delay
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return port


def png(i: int) -> bytes:
    buf = BytesIO()
    Image.new("RGB", (24, 24), (200 if i % 2 else 30, i, 255 - i)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The table (CSV + parquet), its images (local files and an http host), and vlm.serve with the teacher."""
    root = tmp_path_factory.mktemp("pipeline")
    (root / "img").mkdir()
    served: dict[str, bytes] = {}
    host = ImageHost(served, delay=0.0)
    dead_port = closed_port()
    ex = expected()
    rows = []
    for i, p in ex["rows"].items():
        if i % 20 == 0:
            image = (root / "img" / f"gone{i}.png").as_uri()  # file:// to a file that does not exist
        elif i % 20 == 1:
            image = f"http://127.0.0.1:{dead_port}/p{i}.png"
        elif i % 20 == 2:
            (root / "img" / f"notes{i}.png").write_text("this is a text file with an image's name")
            image = f"img/notes{i}.png"
        elif i % 4 == 3:
            served[f"p{i}.png"] = png(i)
            image = f"{host.url}/p{i}.png"
        else:
            (root / "img" / f"p{i}.png").write_bytes(png(i))
            image = f"img/p{i}.png" if i % 2 else str(root / "img" / f"p{i}.png")
        rows.append({**p, "image": image})
    df = pd.DataFrame(rows)
    df.to_csv(root / "products.csv", index=False)
    df.to_parquet(root / "products.parquet", index=False)

    teacher = Teacher(delay=0.02)
    live = LiveServer(teacher, max_batch=4, wait_ms=2)  # the real vlm.serving app on uvicorn, in this process
    url = live.url
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=5)
    for _ in range(200):
        try:
            assert [m.id for m in client.models.list()] == [MODEL]
            break
        except openai.APIConnectionError:
            time.sleep(0.05)
    return {"root": root, "host": host, "teacher": teacher, "url": url, "client": client, "ex": ex}


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def kill_when(cmd: list[str], lines_of: Path, n: int, log: Path, limit_s: float = 60) -> int:
    """Run ``cmd``; SIGKILL it once ``lines_of`` has at least ``n`` lines. Returns the lines at the kill."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=f, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if lines_of.exists() and lines_of.read_bytes().count(b"\n") >= n:
            proc.send_signal(signal.SIGKILL)
            break
        if proc.poll() is not None:
            raise AssertionError(f"finished before it could be killed:\n{log.read_text()[-2000:]}")
        time.sleep(0.01)
    assert proc.wait(10) == -signal.SIGKILL
    return lines_of.read_bytes().count(b"\n")


def settled(read, quiet_s: float = 0.3):
    """``read()`` once it has not changed for ``quiet_s``."""
    last, since = read(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.05)
        if (now := read()) != last:
            last, since = now, time.monotonic()
    return last


def compose(name: str, overrides: list[str], run_dir: Path):
    return compose_run(conf_dir("vlm"), overrides, run_dir, name=name)


def test_ingest_annotate_clean_filter_train(world, tmp_path, vlm_cfg):
    root, ex = world["root"], world["ex"]
    logs, cache = tmp_path / "logs", tmp_path / "cache"
    common = [f"paths.log_dir={logs}", f"paths.cache_dir={cache}", "fetch.retries=1", "fetch.backoff_s=0.01",
              "fetch.per_host=2", "+brands.aliases.Acme=[Akme]", "progress=false"]

    # ---- ingest the CSV as a user does, SIGKILLed while the slow image host is still being fetched from
    world["host"].delay = 0.05
    index = cache / "images" / "index.jsonl"
    at_kill = kill_when([sys.executable, "-m", "vlm.ingest", f"table={root / 'products.csv'}", "name=csv", *common],
                        index, 40, tmp_path / "ingest1.log")
    world["host"].delay = 0.0
    assert 40 <= at_kill < len(ex["ok"])  # killed mid-run
    done = subprocess.run([sys.executable, "-m", "vlm.ingest", f"table={root / 'products.csv'}", "name=csv", *common],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = logs / "vlm.ingest" / "csv"
    report = json.loads((out / "report.json").read_text())
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    # every row is a record or a listed reject, with its reason and line
    assert report["rows"] == N and report["records"] == len(records) == len(ex["ok"]) == 170
    assert report["reasons"] == {"missing": 10, "unreachable": 10, "not_an_image": 10}
    assert len(rejects) == 30 and len(records) + len(rejects) == N
    assert {r["id"] for r in rejects if r["reason"] == "not_an_image"} == {f"p{i:03d}" for i in ex["not_image"]}
    assert {r["id"] for r in rejects if r["reason"] in ("missing", "unreachable")} == {f"p{i:03d}" for i in ex["dead"]}
    assert all(re.fullmatch(rf"{re.escape(str(root / 'products.csv'))}:\d+", r["where"]) for r in rejects)
    assert rejects[0]["where"].endswith(":2") and rejects[0]["id"] == "p000"  # line 2: the first row after the header
    # the re-run fetched only what the killed run had not, and no image is fetched twice
    assert report["images"]["fetched"] + report["images"]["cached"] == 170
    assert report["images"]["cached"] == at_kill
    keys = [r["key"] for r in read_rows(index)]
    assert len(keys) == len(set(keys)) == 170
    # no torn or temporary file: each cached file's name is its content's sha256
    files = [p for p in (cache / "images").rglob("*") if p.is_file() and p.name not in ("index.jsonl", "index.jsonl.lock")]
    assert len(files) == 170 and all(hashlib.sha256(p.read_bytes()).hexdigest() == p.stem for p in files)
    # the brand spellings fold into one name; the other brands and the unlabelled products come through
    by_id = {r["id"]: r for r in records}
    assert len(by_id) == len(records)
    for i in ex["ok"]:
        want = ex["rows"][i]["brand"]
        assert by_id[f"p{i:03d}"]["brand"] == ("Acme" if want in ACME_SPELLINGS else want)
    assert sorted(report["merged_spellings"]["Acme"]) == ["ACME", "Acme", "Akme", "acme"]

    # ---- the parquet copy of the table: the same records, every image from the cache
    cfg = compose("ingest", [f"table={root / 'products.parquet'}", "name=parquet", *common], tmp_path / "run_parquet")
    rep2 = run_ingest(cfg)
    assert rep2["images"] == {"sources": 200, "fetched": 0, "cached": 170, "rejected": 30}
    records2 = [json.loads(x) for x in (logs / "vlm.ingest" / "parquet" / "records.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items()} for r in records2] == records

    # ---- teacher captions through the real vlm.serve, SIGKILLed halfway
    acfg = [f"paths.log_dir={logs}", f"paths.cache_dir={cache}", "+annotate=captions", f"data.path={out / 'records.jsonl'}",
            f"endpoint.base_url={world['url']}", f"endpoint.model={MODEL}", "endpoint.concurrency=4", "endpoint.retries=0",
            "captions.min_brand_samples=5", "+captions.brands.aliases.Acme=[Akme]", "progress=false"]
    ann = logs / "vlm.annotate" / "captions"
    at_kill = kill_when([sys.executable, "-m", "vlm.annotate", *acfg], ann / "cache" / "captions.jsonl", 30, tmp_path / "annotate1.log")
    assert 30 <= at_kill < 170
    asked_before = settled(lambda: world["teacher"].calls)  # the killed client's requests in flight still finish
    rep = run_captions(compose("annotate", acfg, tmp_path / "run_annotate"))
    assert world["teacher"].calls - asked_before == 170 - at_kill  # only what the killed run had not finished
    cache_rows = read_rows(ann / "cache" / "captions.jsonl")
    assert len(cache_rows) == 170 and len({r["key"] for r in cache_rows}) == 170  # no request answered twice

    reasons = ex["reasons"]
    want = Counter(r for r in reasons.values() if r)
    assert rep["items"] == 170
    assert rep["dropped"] == {"failed": 0, "empty": 0, "garbage": want["garbage"], "loop": want["loop"], "too_short": 0,
                              "brand_not_named": want["brand_not_named"], "rare_brand": want["rare_brand"]}
    assert rep["kept"] == sum(r is None for r in reasons.values()) and rep["kept"] + sum(rep["dropped"].values()) == 170
    assert rep["brands"]["dropped_rare"] == [RARE]
    assert rep["fragment_cut"] == 170 - want["loop"] - want["garbage"]  # every answer ended in a fragment
    train = [json.loads(x) for x in (ann / "train.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in train) == sorted(f"p{i:03d}" for i, r in reasons.items() if r is None)
    for r in train:  # cut after the last full stop, and the brand named (through its alias too)
        n = int(r["id"][1:])
        assert r["caption"].endswith(".") and not r["caption"].endswith("a.")
        if r["brand"]:
            assert r["brand"].lower() in r["caption"].lower() or (r["brand"] == "Acme" and "AKME" in r["caption"])
        else:
            assert r["caption"] == f"A {'red' if n % 2 else 'dark'} product, item {n}, with no brand in sight."
    assert any("AKME" in r["caption"] for r in train)
    assert Counter(r["brand"] for r in train)[None] == sum(1 for i, r in reasons.items() if r is None and ex["rows"][i]["brand"] is None)

    # ---- one epoch of vlm.train on the teacher's training set, read as is
    tcfg = vlm_cfg("data=jsonl", f"data.train_file={ann / 'train.jsonl'}", "data.val_fraction=0.2",
                   "data.min_brand_samples=5", "data.train_eval_size=8", "logger=none", "callbacks.progress_bar=null",
                   "+trainer.enable_progress_bar=false", "trainer.max_epochs=1", "model.llm.pretrain_steps=1",
                   "model.vision.pretrain_steps=0")  # one epoch runs; learning is test_train_e2e's
    from vlm.build import build
    from vlm.schemas import SCHEMAS

    run.train(tcfg, build=build, schemas=SCHEMAS)
    metrics = json.loads((Path(tcfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["val/loss"] > 0 and "val/logo_recall" in metrics, metrics
    from vlm.data import BrandCaptionData

    dm = BrandCaptionData(tcfg.data, 64, tcfg.paths.cache_dir)
    seen = {r.id: r.caption for split in ("train", "val") for r in dm.records[split]}
    assert seen == {r["id"]: r["caption"] for r in train}  # every kept caption trains, unchanged by the reader
