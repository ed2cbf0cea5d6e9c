"""``vlm.serve``: request validation, batching, and the real server (a real Captioner export) over HTTP."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ROOT
from vlm.serve import Batcher, ClientError, GenSettings, ParsedRequest, parse_request

MODEL = "vlm-captioner"

# --------------------------------------------------------------------------------------------- helpers


def png_bytes(color=(200, 30, 30), size=16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def data_url(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def chat_body(image: str, text: str = "Describe the product in the image.", **gen) -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": text}]}],
        **gen,
    }


def post(url: str, body, timeout: float = 120) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=raw, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str, timeout: float = 30) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# --------------------------------------------------------------------------- the real server, once a session
_SESSION: dict = {}


def build_tiny_export(out: Path) -> Path:
    """A real captioner export from the embedded tiny config, without training (a random tiny LM: its
    answers are arbitrary but greedy decoding is deterministic, which is what the serving tests need)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    import vlm.models.llm as llm_lib
    from vlm.build import build
    from vlm.captioner import save_captioner

    GlobalHydra.instance().clear()
    with initialize_config_module("conf.vlm", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"paths.cache_dir={out / 'cache'}",
                "logger=none",
                "data.synthetic.brands=4",
                "data.synthetic.train_logo_per_brand=2",
                "data.synthetic.train_none=2",
                "data.synthetic.train_none_brand_per_brand=1",
                "data.synthetic.eval_logo_per_brand=1",
                "data.synthetic.eval_none=1",
                "data.synthetic.eval_none_brand_per_brand=1",
                "model.vision.hidden_size=32",
                "model.vision.num_layers=1",
                "model.vision.num_heads=2",
                "model.vision.intermediate_size=64",
                "model.llm.hidden_size=32",
                "model.llm.intermediate_size=64",
                "model.llm.num_layers=1",
                "model.llm.num_heads=2",
                "model.llm.num_kv_heads=1",
            ],
        )
    GlobalHydra.instance().clear()
    with pytest.MonkeyPatch.context() as mp:  # skip the LM's pre-training: seconds instead of minutes
        mp.setattr(llm_lib, "pretrain", lambda *a, **k: [0.0, 0.0])
        module, _ = build(cfg)
    return save_captioner(module.vlm, out / "captioner", module.export_info)


def start_server(tmp: Path, *overrides: str) -> tuple[subprocess.Popen, str]:
    """``python -m vlm.serve ... port=0`` in a subprocess; returns it and its base URL (``.../v1``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlm.serve", "port=0", f"hydra.run.dir={tmp / 'hydra'}", *overrides],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
    )
    line = proc.stdout.readline()  # the first stdout line announces the address (or the process died)
    if "serving" not in line:
        proc.kill()
        raise RuntimeError(f"vlm.serve did not start: {line!r}\n{(tmp / 'serve.log').read_text()[-3000:]}")
    url = line.split(" on ", 1)[1].strip()
    return proc, url


@pytest.fixture(scope="session")
def captioner_export(tmp_path_factory) -> Path:
    if "export" not in _SESSION:
        _SESSION["export"] = build_tiny_export(tmp_path_factory.mktemp("vlm-captioner"))
    return _SESSION["export"]


@pytest.fixture(scope="session")
def server_url(captioner_export, tmp_path_factory, request) -> str:
    """The real server on a free loopback port, serving the real Captioner export (shared by test files)."""
    if "url" not in _SESSION:
        proc, url = start_server(tmp_path_factory.mktemp("vlm-serve"), f"checkpoint={captioner_export}", "batch.wait_ms=30", "backend.device=cpu")
        _SESSION["url"] = url

        def stop():
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

        request.config.add_cleanup(stop)
    return _SESSION["url"]


class PixelBackend:
    """A stand-in model for the mix-up test: its answer spells out the image's corner pixel, the prompt and
    the token limit, so an answer handed to the wrong request is caught. (The tiny untrained Captioner's
    answers are mostly empty, which would hide a mix-up.)"""

    def __init__(self, name: str = MODEL, **_):
        self.name = name

    def caption(self, images, prompts, *, temperature, top_p, max_new_tokens):
        time.sleep(0.05)  # a call takes a while, like a model's, so concurrent requests queue up
        return [f"rgb{im.getpixel((0, 0))} | {p} | {max_new_tokens}" for im, p in zip(images, prompts, strict=True)]


@pytest.fixture(scope="session")
def pixel_server_url(tmp_path_factory, request) -> str:
    """The real server (real HTTP, parsing, batching) with :class:`PixelBackend` as its model."""
    proc, url = start_server(tmp_path_factory.mktemp("vlm-serve-pixel"), "backend._target_=tests.vlm.test_serve.PixelBackend", "batch.wait_ms=30")
    request.addfinalizer(proc.kill)
    return url


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> list[Path]:
    """20 distinct little product-like images."""
    out = tmp_path_factory.mktemp("serve-images")
    paths = []
    for i in range(20):
        im = Image.new("RGB", (64, 64), (20 + 11 * i, 240 - 9 * i, (60 * i) % 256))
        im.paste((255 - 12 * i, 40, 10 * i), (8 + i, 8, 40 + i, 30 + i))
        paths.append(out / f"{i:02d}.png")
        im.save(paths[-1])
    return paths


# ------------------------------------------------------------------------------------- request validation
def _msg(content) -> dict:
    return {"messages": [{"role": "user", "content": content}]}


IMG = {"type": "image_url", "image_url": {"url": data_url(png_bytes())}}
TXT = {"type": "text", "text": "Describe it."}

BAD = [
    ([], 400, "must be a JSON object"),
    ({}, 400, "'messages' must be a non-empty list"),
    ({"messages": []}, 400, "'messages' must be a non-empty list"),
    ({"messages": ["hi"]}, 400, "messages[0] must be an object"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content must be a string or a list"),
    (_msg([TXT]), 400, "exactly one image per request, got 0"),
    (_msg([IMG, IMG, TXT]), 400, "exactly one image per request, got 2"),
    (_msg([{"type": "audio"}]), 400, "type must be 'text' or 'image_url'"),
    (_msg([{"type": "image_url", "image_url": {}}]), 400, "image_url must be"),
    (_msg([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]), 400, "not valid base64"),
    (_msg([{"type": "image_url", "image_url": {"url": data_url(b"not a png")}}]), 400, "not a readable image"),
    (_msg([{"type": "image_url", "image_url": {"url": "/no/such/file.png"}}]), 400, "no such image file"),
    (_msg([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]), 400, "remote URLs are not fetched"),
    ({**_msg([IMG]), "temperature": "hot"}, 400, "'temperature' must be a number"),
    ({**_msg([IMG]), "temperature": 3}, 400, "'temperature' must be in [0.0, 2.0]"),
    ({**_msg([IMG]), "top_p": 0}, 400, "'top_p' must be in (0.0, 1.0]"),
    ({**_msg([IMG]), "max_tokens": 0}, 400, "'max_tokens' must be an integer in [1, 64]"),
    ({**_msg([IMG]), "max_tokens": 10_000}, 400, "'max_tokens' must be an integer in [1, 64]"),
    ({**_msg([IMG]), "stream": True}, 400, "streaming is not supported"),
    ({**_msg([IMG]), "n": 3}, 400, "only n=1"),
    ({**_msg([IMG]), "seed": "x"}, 400, "'seed' must be an integer"),
    ({**_msg([IMG]), "model": "gpt-4o"}, 404, "the model 'gpt-4o' does not exist"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD, ids=[m for _, _, m in BAD])
def test_malformed_requests_are_client_errors(body, status, message):
    with pytest.raises(ClientError) as e:
        parse_request(body, MODEL, max_tokens_limit=64)
    assert e.value.status == status
    assert message in e.value.message


def test_a_valid_request_is_parsed(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes((1, 2, 3)))
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": path.as_uri()}}, {"type": "text", "text": "What brand?"}]},
        ],
        "temperature": 0.1,
        "top_p": 0.2,
        "max_tokens": 7,
    }
    req = parse_request(body, MODEL, max_tokens_limit=64)
    assert req.prompt == "Be brief.\nWhat brand?"
    assert req.gen == GenSettings(0.1, 0.2, 7, None)
    assert req.image.getpixel((0, 0)) == (1, 2, 3)
    # a plain path works as well as a file:// URL; file paths can be switched off
    body["messages"][1]["content"][0]["image_url"] = str(path)
    assert parse_request(body, MODEL, 64).image.size == (16, 16)
    with pytest.raises(ClientError, match="file paths are disabled"):
        parse_request(body, MODEL, 64, allow_files=False)


# ----------------------------------------------------------------------------------------------- batching
class EchoBackend:
    """Answers with the image's red value and the prompt, and records the size of every call."""

    name = MODEL

    def __init__(self):
        self.calls: list[tuple[int, float]] = []

    def caption(self, images, prompts, *, temperature, top_p, max_new_tokens):
        time.sleep(0.05)
        self.calls.append((len(images), temperature))
        return [f"{im.getpixel((0, 0))[0]}:{p}:{max_new_tokens}" for im, p in zip(images, prompts, strict=True)]


def test_batcher_groups_concurrent_requests_and_keeps_answers_apart():
    backend = EchoBackend()

    async def main():
        batcher = Batcher(backend, max_size=8, wait_ms=50)
        batcher.start()
        reqs = [
            ParsedRequest(Image.new("RGB", (4, 4), (i, 0, 0)), f"p{i % 3}", GenSettings(0.0 if i < 10 else 0.5, 1.0, 5 + (i >= 10)), MODEL)
            for i in range(16)
        ]
        answers = await asyncio.gather(*(batcher.submit(r) for r in reqs))
        await batcher.stop()
        return answers

    answers = asyncio.run(main())
    assert answers == [f"{i}:p{i % 3}:{5 + (i >= 10)}" for i in range(16)]
    assert sum(n for n, _ in backend.calls) == 16
    assert max(n for n, _ in backend.calls) > 1  # requests were grouped ...
    assert max(n for n, _ in backend.calls) <= 8  # ... up to max_size
    # a call never mixes generation settings
    assert {t for _, t in backend.calls} == {0.0, 0.5}


def test_a_failing_backend_fails_its_requests_not_the_batcher():
    class Flaky(EchoBackend):
        def caption(self, images, prompts, **gen):
            if any(p == "boom" for p in prompts):
                raise RuntimeError("model exploded")
            return super().caption(images, prompts, **gen)

    async def main():
        batcher = Batcher(Flaky(), max_size=4, wait_ms=0)
        batcher.start()
        im = Image.new("RGB", (4, 4), (7, 0, 0))
        with pytest.raises(RuntimeError, match="exploded"):
            await batcher.submit(ParsedRequest(im, "boom", GenSettings(0.0, 1.0, 3), MODEL))
        ok = await batcher.submit(ParsedRequest(im, "fine", GenSettings(0.0, 1.0, 3), MODEL))
        await batcher.stop()
        return ok

    assert asyncio.run(main()) == "7:fine:3"


# ------------------------------------------------------------------------------ the real server over HTTP
def test_20_concurrent_requests_get_their_own_answers(pixel_server_url, images):
    base = pixel_server_url
    bodies = [chat_body(data_url(p.read_bytes()), f"prompt {i}", temperature=0, max_tokens=5 + i % 3) for i, p in enumerate(images)]
    expected = []
    for i, p in enumerate(images):
        with Image.open(p) as im:
            expected.append(f"rgb{im.convert('RGB').getpixel((0, 0))} | prompt {i} | {5 + i % 3}")
    assert len(set(expected)) == 20
    alone = [post(f"{base}/chat/completions", b)[1]["choices"][0]["message"]["content"] for b in bodies]
    assert alone == expected
    batches_before = get(base.removesuffix("/v1") + "/health")[1]["batches"]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        together = list(pool.map(lambda b: post(f"{base}/chat/completions", b), bodies))
    assert [s for s, _ in together] == [200] * 20
    assert [r["choices"][0]["message"]["content"] for _, r in together] == expected
    health = get(base.removesuffix("/v1") + "/health")[1]
    # 20 requests (3 different max_tokens settings) took fewer backend calls than 20: they were batched
    assert health["batches"] - batches_before < 20 and health["max_batch_seen"] > 1


def test_real_captioner_answers_20_concurrent_requests_like_each_alone(server_url, images):
    base = server_url
    status, models = get(f"{base}/models")
    assert status == 200 and [m["id"] for m in models["data"]] == [MODEL]
    prompts = ["Describe the product in the image.", "What product is this?"]
    bodies = [chat_body(data_url(p.read_bytes()), prompts[i % 2], temperature=0, max_tokens=12) for i, p in enumerate(images)]
    # file paths are accepted too (the server runs on this machine)
    bodies[0]["messages"][0]["content"][0]["image_url"]["url"] = str(images[0])

    alone = []
    for b in bodies:
        status, r = post(f"{base}/chat/completions", b)
        assert status == 200, r
        alone.append(r["choices"][0]["message"]["content"])
        assert r["object"] == "chat.completion" and r["model"] == MODEL
        assert r["usage"]["total_tokens"] == r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"]
        assert r["choices"][0]["finish_reason"] in ("stop", "length")
    batches_before = get(f"{server_url.removesuffix('/v1')}/health")[1]["batches"]

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        together = list(pool.map(lambda b: post(f"{base}/chat/completions", b), bodies))
    assert all(s == 200 for s, _ in together), [r for s, r in together if s != 200]
    assert [r["choices"][0]["message"]["content"] for _, r in together] == alone
    health = get(f"{server_url.removesuffix('/v1')}/health")[1]
    assert health["status"] == "ok"
    # 20 requests went through fewer backend calls than 20: the server batched them
    assert health["batches"] - batches_before < 20


def test_server_rejects_malformed_requests_with_4xx_json_and_keeps_serving(server_url, images):
    base = server_url
    root = base.removesuffix("/v1")
    cases = [
        (post(f"{base}/chat/completions", b"{not json"), 400, "not valid JSON"),
        (post(f"{base}/chat/completions", b"\xff\xfe"), 400, "not valid JSON"),
        (post(f"{base}/chat/completions", {"messages": "hi"}), 400, "'messages' must be a non-empty list"),
        (post(f"{base}/chat/completions", chat_body(data_url(b"garbage"))), 400, "not a readable image"),
        (post(f"{base}/chat/completions", chat_body(data_url(png_bytes()), max_tokens=-1)), 400, "'max_tokens'"),
        (post(f"{base}/chat/completions", {**chat_body(data_url(png_bytes())), "model": "other"}), 404, "does not exist"),
        (get(f"{base}/chat/completions"), 405, "Method Not Allowed"),
        (get(f"{root}/v1/nothing"), 404, "Not Found"),
    ]
    for (status, body), want_status, want in cases:
        assert status == want_status, body
        assert set(body) == {"error"} and want in body["error"]["message"], body
        assert isinstance(body["error"]["type"], str)
    assert get(f"{root}/health") == (200, get(f"{root}/health")[1])
    status, r = post(f"{base}/chat/completions", chat_body(data_url(images[3].read_bytes()), temperature=0, max_tokens=4))
    assert status == 200 and isinstance(r["choices"][0]["message"]["content"], str)


def test_a_bad_checkpoint_or_host_is_a_config_error(tmp_path):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from common.errors import ConfigError
    from vlm.serve import run_from_config

    def cfg(*overrides):
        GlobalHydra.instance().clear()
        with initialize_config_module("conf.vlm", version_base="1.3"):
            return compose("serve", overrides=list(overrides))

    with pytest.raises(ConfigError, match=rf"^{tmp_path}: not a captioner export \(no captioner.json\)$"):
        run_from_config(cfg(f"checkpoint={tmp_path}", "port=0"))
    with pytest.raises(ConfigError, match=r"^host: '0.0.0.0' would expose the server beyond this machine"):
        run_from_config(cfg("host=0.0.0.0"))
    with pytest.raises(ConfigError, match=r"^port: must be in \[0, 65535\], got 70000"):
        run_from_config(cfg("port=70000"))
    GlobalHydra.instance().clear()
