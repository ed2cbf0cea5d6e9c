"""``vlm.annotate``: exact per-class numbers on a hand-made set (a rule-following teacher behind a loopback
OpenAI-compatible stub), the resumable cache, and the real thing: ``python -m vlm.annotate`` against the real
``vlm.serve`` over HTTP in all three modes, SIGKILLed halfway and resumed without losses or duplicates."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from common.errors import ConfigError, DataError, UserError
from tests.conftest import ROOT
from tests.vlm.test_serve import captioner_export, server_url  # noqa: F401  (the shared real server)
from vlm.annotation.cache import ResultCache, read_rows
from vlm.annotation.client import ChatClient, RequestFailed
from vlm.annotation.report import pct
from vlm.annotation.runner import run

COLORS = {"red": (220, 30, 30), "blue": (30, 70, 225), "grey": (140, 140, 140), "green": (20, 165, 60)}
TEACHER_SEES = {"red": "Acme", "blue": "Bolt", "grey": "none"}  # green: the stub answers HTTP 400
# id, colour, gold label (None = no brand)
ITEMS = [
    ("a1", "red", "Acme"), ("a2", "red", "Acme"), ("a3", "red", "Acme"),
    ("b1", "blue", "Bolt"), ("b2", "blue", "Bolt"), ("b3", "red", "Bolt"),  # b3: a wrong label
    ("n1", "grey", None), ("n2", "grey", None), ("n3", "grey", "Acme"),  # n3: a wrong label
    ("f1", "green", "Acme"),  # every request for it fails
]
CLASSES = [
    {"name": "Acme", "definition": "red emblem", "aliases": ["Akme"]},
    {"name": "Bolt", "definition": "blue emblem"},
    {"name": "none", "definition": "no brand", "none": True},
]


def teacher_answer(seen: str, prompt: str) -> str:
    """Free mode: names what it sees (Acme through its alias). Label given: agrees at length when the label is
    what it sees (the class name comes last, so a 40-character limit cuts it off), else sticks to its view."""
    given = re.search(r"belongs to the class (\w+)\.", prompt)
    if not given:
        return {"Acme": "This is a product by Akme.", "Bolt": "This is a product by Bolt."}.get(seen, "No brand is visible.")
    label = given.group(1)
    if label == seen:
        return "The product in the photo shows a clear emblem and a wordmark. It is unbranded." if seen == "none" else (
            f"The product in the photo shows a clear emblem and a wordmark. It is {seen}.")
    return "No brand is visible." if seen == "none" else f"The image shows {seen}."


class StubTeacher:
    """A loopback OpenAI-compatible stub: /v1/models, /v1/chat/completions; 503 on the first try for blue images."""

    def __init__(self):
        self.requests = 0
        self.seen_first: set[str] = set()
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, body, headers=None):
                raw = json.dumps(body).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "stub-teacher", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                parts = body["messages"][0]["content"]
                url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
                prompt = next(p["text"] for p in parts if p["type"] == "text")
                im = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
                color = next(n for n, c in COLORS.items() if c == im.getpixel((8, 8)))
                with stub.lock:
                    stub.requests += 1
                    first = (color == "blue") and (prompt, url) not in stub.seen_first
                    stub.seen_first.add((prompt, url))
                if color == "green":
                    return self._send(400, {"error": {"message": "image rejected by the stub", "type": "invalid_request_error"}})
                if first:  # retry-after-ms: how OpenAI-compatible servers tell the openai client when to retry
                    return self._send(503, {"error": {"message": "busy", "type": "server_error"}}, {"retry-after-ms": "10"})
                text = teacher_answer(TEACHER_SEES[color], prompt)
                self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    s = StubTeacher()
    yield s
    s.close()


@pytest.fixture
def handmade(tmp_path) -> Path:
    (tmp_path / "img").mkdir()
    rows = []
    for rid, color, label in ITEMS:
        Image.new("RGB", (16, 16), COLORS[color]).save(tmp_path / "img" / f"{rid}.png")
        rows.append({"id": rid, "image": f"img/{rid}.png", "brand": label, "caption": "old caption", "kind": "logo"})
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def annotate_cfg(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_module("conf.vlm", version_base="1.3"):
        cfg = compose("annotate", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


def handmade_cfg(stub, data: Path, out: Path, *extra: str):
    cfg = annotate_cfg(
        f"endpoint.base_url={stub.url}",
        "endpoint.model=stub-teacher",
        "endpoint.concurrency=3",
        f"data.path={data}",
        f"out_dir={out}",
        "modes.limited.max_chars=40",
        "progress=false",
        *extra,
    )
    OmegaConf.update(cfg, "classes.list", CLASSES)
    return cfg


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------- exact numbers, hand-made set
def test_per_class_agreement_suspects_and_training_set_on_a_handmade_set(stub, handmade, tmp_path):
    out = tmp_path / "out"
    report = run(handmade_cfg(stub, handmade, out))

    per = {c: {m: (s["agree"], s["answered"], s["failed"]) for m, s in modes.items()} for c, modes in report["per_class"].items()}
    assert per == {
        "Acme": {"free": (3, 4, 1), "given": (3, 4, 1), "limited": (0, 4, 1)},
        "Bolt": {"free": (2, 3, 0), "given": (2, 3, 0), "limited": (0, 3, 0)},
        "none": {"free": (2, 2, 0), "given": (2, 2, 0), "limited": (2, 2, 0)},
    }
    assert report["confusions"] == {"Acme": {"none": 1}, "Bolt": {"Acme": 1}, "none": {}}
    assert report["diagnosis"]["none"] == "agrees"
    assert report["diagnosis"]["Bolt"] == "the teacher keeps naming another class for 1 of 3: check these labels"
    le = report["length_effect"]
    assert (le["from"], le["to"], le["lost"], le["gained"]) == ("given", "limited", ["a1", "a2", "a3", "b1", "b2"], [])
    assert report["overall"]["limited"]["truncated"] == 7  # every long answer was cut to 40 characters
    assert report["train"] == {"kept": 2, "dropped_suspect": 2, "dropped_disagree": 5, "dropped_empty": 0, "dropped_failed": 1}
    assert report["failed"] == 3

    errors = jsonl(out / "label_errors.jsonl")
    assert [(e["id"], e["label"], e["suggested"], e["votes"]) for e in errors] == [("n3", "Acme", "none", 3), ("b3", "Bolt", "Acme", 3)]
    train = jsonl(out / "train_corrected.jsonl")
    assert [(t["id"], t["brand"], t["kind"]) for t in train] == [("n1", None, "logo"), ("n2", None, "logo")]
    assert all(t["caption"] == "The product in the photo shows a clear" and t["teacher"]["mode"] == "limited" for t in train)

    free = {r["id"]: r for r in jsonl(out / "annotated" / "free.jsonl")}
    assert list(free) == [i for i, _, _ in ITEMS]
    assert free["a1"]["named"] == ["Acme"] and free["a1"]["answer"] == "This is a product by Akme."  # alias match
    assert free["b1"]["attempts"] == 2  # a 503 was retried
    assert free["f1"]["status"] == "error" and "HTTP 400: image rejected by the stub" in free["f1"]["error"]
    assert "truncated" in jsonl(out / "annotated" / "limited.jsonl")[0]["clean_flags"]

    md = (out / "report.md").read_text()
    acme_row = next(line for line in md.splitlines() if line.startswith("| Acme |"))
    assert acme_row.startswith("| Acme | 5 | 0.750 (3/4) | 0.750 (3/4) | 0.000 (0/4) | -0.750 |")
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<h2>Suspected label errors</h2>" in html

    # A re-run asks again only for what failed; finished requests come from the cache.
    before = stub.requests
    again = run(handmade_cfg(stub, handmade, out))
    assert stub.requests - before == 3  # f1 in three modes
    assert again["per_class"] == report["per_class"]
    # A changed prompt is a new request, not a stale cache hit.
    before = stub.requests
    run(handmade_cfg(stub, handmade, out, "run_modes=[free]", "modes.free.prompt='Which brand is this?'"))
    assert stub.requests - before == len(ITEMS) + 1  # + the stub's one 503 for the (shared) blue image


def test_bad_configs_and_data_fail_with_the_key_or_line(stub, handmade, tmp_path):
    with pytest.raises(ConfigError, match=r"modes.given.prompt: unknown field\(s\) \{gold\}"):
        run(handmade_cfg(stub, handmade, tmp_path / "o", "modes.given.prompt='It is {gold}.'"))
    with pytest.raises(ConfigError, match="endpoint.model: 'nope' is not served"):
        run(handmade_cfg(stub, handmade, tmp_path / "o", "endpoint.model=nope"))
    with pytest.raises(ConfigError, match=r"generation.top_p: expected a number in \[0.0, 1.0\]"):
        run(handmade_cfg(stub, handmade, tmp_path / "o", "generation.top_p=5"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(handmade.read_text().replace('"brand": "Bolt"', '"brand": "Boltt"', 1))
    (tmp_path / "img").mkdir(exist_ok=True)
    for p in (handmade.parent / "img").iterdir():
        (tmp_path / "img" / p.name).write_bytes(p.read_bytes())
    with pytest.raises(DataError, match=r"bad.jsonl:4: unknown label 'Boltt'"):
        run(handmade_cfg(stub, bad, tmp_path / "o"))
    with pytest.raises(UserError, match="endpoint.base_url: .*/models failed: cannot reach"):
        run(handmade_cfg(stub, handmade, tmp_path / "o", "endpoint.base_url=http://127.0.0.1:9/v1", "endpoint.retries=0"))


def test_client_does_not_retry_client_errors(stub):
    client = ChatClient(stub.url, "stub-teacher", retries=3)
    green = "data:image/png;base64," + base64.b64encode(_png(COLORS["green"])).decode()
    before = stub.requests
    with pytest.raises(RequestFailed) as e:
        client.chat("Describe.", green, temperature=0.1, top_p=0.2, max_tokens=10)
    assert (e.value.status, e.value.attempts, stub.requests - before) == (400, 1, 1)


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="PNG")
    return buf.getvalue()


def test_cache_cuts_a_torn_line_and_never_duplicates(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"key": "k1", "status": "ok"}) + "\n" + json.dumps({"key": "k2", "status": "error"}) + "\n" + '{"key": "k3", "sta')
    with ResultCache(path) as cache:
        assert cache.done("k1") and not cache.done("k2") and not cache.done("k3")
        cache.append({"key": "k2", "status": "ok"})
        with pytest.raises(UserError, match="another run is writing this cache; wait for it or use another out_dir"):
            ResultCache(path).__enter__()
    assert [r["key"] for r in read_rows(path)] == ["k1", "k2", "k2"]
    assert path.read_text().endswith('"ok"}\n')


# ---------------------------------------------------------------- the real server, killed and resumed run
def test_annotate_against_the_real_server_survives_sigkill_and_matches_its_report(server_url, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    args = [
        sys.executable, "-m", "vlm.annotate", "+annotate=synthetic",
        f"endpoint.base_url={server_url}", f"out_dir={out}", f"paths.cache_dir={tmp_path / 'cache'}",
        "data.synthetic.eval_logo_per_brand=2", "data.synthetic.eval_none=2", "generation.max_tokens=12", "progress=false",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    modes = ("free", "given", "limited")
    n_items, total = 4 * 2 + 2 + 4 * 1, 3 * (4 * 2 + 2 + 4 * 1)

    def lines() -> int:
        return sum(len(read_rows(out / "cache" / f"{m}.jsonl")) for m in modes)

    first = subprocess.Popen([*args, "endpoint.concurrency=1", f"hydra.run.dir={tmp_path / 'h1'}"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while lines() < total // 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert first.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    before = {m: (out / "cache" / f"{m}.jsonl").read_bytes() if (out / "cache" / f"{m}.jsonl").exists() else b"" for m in modes}
    done_before = lines()
    assert total // 2 <= done_before < total

    # resumed with images sent as file paths instead of data URLs: the cache keys on the image's content, not on how it travels
    second = subprocess.run([*args, "endpoint.concurrency=4", "endpoint.image_transport=path", f"hydra.run.dir={tmp_path / 'h2'}"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{done_before} of {total} requests cached" in second.stdout + second.stderr

    # Nothing lost: the killed run's finished lines are still there, first; nothing duplicated.
    ids = None
    for m in modes:
        after = (out / "cache" / f"{m}.jsonl").read_bytes()
        kept = before[m][: before[m].rfind(b"\n") + 1]
        assert after.startswith(kept)
        rows = read_rows(out / "cache" / f"{m}.jsonl")
        assert all(r["status"] == "ok" for r in rows)
        counts = Counter(r["id"] for r in rows)
        assert len(counts) == n_items and set(counts.values()) == {1}
        annotated = jsonl(out / "annotated" / f"{m}.jsonl")
        assert sorted(r["id"] for r in annotated) == sorted(counts)
        ids = ids or sorted(counts)
        cached_answer = {r["id"]: r["answer"] for r in rows}
        assert all(r["answer_raw"] == cached_answer[r["id"]] for r in annotated)

    # The report's per-class numbers are the JSONL's.
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    labels = sorted({r["label"] for r in jsonl(out / "annotated" / "free.jsonl")})
    assert labels == ["Brixo", "Quanta", "Velora", "Zorvik", "none"]
    for cls in labels:
        row = next(line for line in md.splitlines() if line.startswith(f"| {cls} |"))
        for m in modes:
            mine = [r for r in jsonl(out / "annotated" / f"{m}.jsonl") if r["label"] == cls]
            answered = [r for r in mine if r["status"] == "ok" and r["answer"]]
            stats = report["per_class"][cls][m]
            assert stats["n"] == len(mine)
            assert stats["answered"] == len(answered)
            assert stats["agree"] == sum(bool(r["agree"]) for r in answered)
            assert stats["failed"] == sum(r["status"] != "ok" for r in mine) == 0
            assert stats["empty"] == len(mine) - len(answered)
            assert f" {pct(stats)} " in row
    assert (out / "report.html").read_text().startswith("<!doctype html>")
    assert len(jsonl(out / "train_corrected.jsonl")) == report["train"]["kept"]


def test_from_jsonl_overlay_reads_class_definitions_from_a_yaml_file(stub, handmade, tmp_path):
    import yaml

    classes = tmp_path / "classes.yaml"
    classes.write_text(yaml.safe_dump({"classes": CLASSES}))
    common = [f"endpoint.base_url={stub.url}", "endpoint.model=stub-teacher", "progress=false", f"out_dir={tmp_path / 'o'}"]
    with pytest.raises(ConfigError, match=r"^data.path: must be set"):
        run(annotate_cfg("+annotate=from_jsonl", f"classes.file={classes}", *common))
    with pytest.raises(ConfigError, match=r"^classes.file: .*nope.yaml: no such file"):
        run(annotate_cfg("+annotate=from_jsonl", f"classes.file={tmp_path / 'nope.yaml'}", f"data.path={handmade}", *common))
    report = run(annotate_cfg("+annotate=from_jsonl", f"classes.file={classes}", f"data.path={handmade}", "data.label_key=brand", "run_modes=[free]", *common))
    assert {c: s["free"]["agree"] for c, s in report["per_class"].items()} == {"Acme": 3, "Bolt": 2, "none": 2}
