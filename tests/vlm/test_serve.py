"""``vlm.serve`` through the official ``openai`` client: models, completions, streaming, exact usage, errors,
200 concurrent requests never mixed up (the echo backend, in-process server), and the real captioner export
behind ``python -m vlm.serve`` in a subprocess (the command line itself)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from PIL import Image

from tests.conftest import ROOT
from tests.vlm.live_server import MODEL, LiveServer, data_url, png_bytes, user
from vlm.serving.backends import EchoBackend
from vlm.serving.batcher import Batcher, GenSettings

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
                "model.vision.pretrain_steps=0",  # a random tower is all the serving tests need
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


@pytest.fixture(scope="module")
def echo():
    """The real app on a real uvicorn server in this process; the echo backend's calls cost 20 ms each."""
    live = LiveServer(EchoBackend(MODEL, image_tokens=16, call_ms=20), max_batch=16, wait_ms=20, max_tokens_limit=64)
    yield live
    live.close()


def client(url: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="-", max_retries=0, timeout=kw.pop("timeout", 60), **kw)


def digest(path_or_raw) -> str:
    """What the echo backend names an image by: the SHA-1 of its RGB pixels (computed here independently)."""
    src = path_or_raw if isinstance(path_or_raw, Path) else __import__("io").BytesIO(path_or_raw)
    with Image.open(src) as im:
        return hashlib.sha1(im.convert("RGB").tobytes()).hexdigest()[:10]


# ------------------------------------------------------------------------------------ the echo backend
def test_models_list_and_retrieve(echo):
    c = client(echo.url)
    assert [m.id for m in c.models.list()] == [MODEL]
    assert c.models.retrieve(MODEL).owned_by == "mlmono"
    with pytest.raises(openai.NotFoundError) as e:
        c.models.retrieve("gpt-4o")
    assert e.value.body["code"] == "model_not_found"


def test_completion_and_its_usage_counts_on_a_handmade_case(echo):
    raw = png_bytes((1, 2, 3))
    messages = [{"role": "system", "content": "Be brief."}, *user(data_url(raw), "What brand is this?"),
                {"role": "assistant", "content": "Earlier answers are not read."}]
    r = client(echo.url).chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=30)
    assert r.object == "chat.completion" and r.model == MODEL and len(r.choices) == 1
    assert r.choices[0].message.content == f"image {digest(raw)} 16x16: Be brief. What brand is this?"
    assert r.choices[0].finish_reason == "stop"
    # the model reads "Be brief." (2 words) + "What brand is this?" (4) + one image (16 tokens); it wrote 9 words
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (22, 9, 31)

    cut = client(echo.url).chat.completions.create(model=MODEL, messages=messages, max_tokens=3)
    assert cut.choices[0].message.content == f"image {digest(raw)} 16x16:"
    assert (cut.choices[0].finish_reason, cut.usage.completion_tokens) == ("length", 3)


def test_streamed_chunks_reassemble_to_the_answer(echo, images):
    c = client(echo.url)
    messages = user(data_url(images[4].read_bytes()), "Name the brand of this product in one sentence, please.")
    whole = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=40)
    chunks = list(c.chat.completions.create(model=MODEL, messages=messages, max_tokens=40, stream=True, stream_options={"include_usage": True}))
    assert {ch.object for ch in chunks} == {"chat.completion.chunk"} and len({ch.id for ch in chunks}) == 1
    with_choices = [ch for ch in chunks if ch.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in with_choices)
    assert text == whole.choices[0].message.content
    assert sum(bool(ch.choices[0].delta.content) for ch in with_choices) > 1  # more than one piece
    assert [ch.choices[0].finish_reason for ch in with_choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    # without stream_options no usage chunk, as OpenAI does
    plain = list(c.chat.completions.create(model=MODEL, messages=messages, max_tokens=40, stream=True))
    assert all(ch.usage is None and ch.choices for ch in plain)


def test_a_wrong_model_is_404(echo):
    with pytest.raises(openai.NotFoundError) as e:
        client(echo.url).chat.completions.create(model="gpt-4o", messages=user(data_url(png_bytes())))
    assert e.value.status_code == 404
    assert e.value.body == {"message": f"the model 'gpt-4o' does not exist; this server serves '{MODEL}'",
                            "type": "NotFoundError", "param": "model", "code": "model_not_found"}


IMG = {"type": "image_url", "image_url": {"url": data_url(png_bytes())}}
TXT = {"type": "text", "text": "Describe it."}
BAD = [
    ({"temperature": 3}, "temperature", "temperature: Input should be less than or equal to 2"),
    ({"top_p": 0}, "top_p", "top_p: Input should be greater than 0"),
    ({"n": 3}, "n", "n: Input should be 1"),
    ({"max_tokens": 0}, "max_tokens", "max_tokens: Input should be greater than or equal to 1"),
    ({"max_tokens": 10_000}, "max_tokens", "max_tokens: at most 64 on this server, got 10000"),
    ({"max_completion_tokens": 65}, "max_completion_tokens", "max_completion_tokens: at most 64 on this server, got 65"),
    ({"seed": "x"}, "seed", "seed: Input should be a valid integer"),
    ({"seed": 2**70}, "seed", "seed: Input should be less than 9223372036854775808"),
    ({"messages": []}, "messages", "messages: List should have at least 1 item"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages", "messages[0].role: Input should be 'system', 'developer', 'user' or 'assistant'"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages", "messages[0].content: Input should be a valid string"),
    ({"messages": [{"role": "user", "content": [IMG, {"type": "audio"}]}]}, "messages", "messages[0].content[1]: Input tag 'audio' found using 'type' does not match"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages", "messages[0].content[0].image_url.url: Field required"),
    ({"messages": [{"role": "assistant", "content": [IMG]}]}, "messages", "messages[0]: images are only accepted in user messages (this one is assistant)"),
    ({"messages": [{"role": "user", "content": [TXT]}]}, "messages", "this captioner needs exactly one image per request, got 0"),
    ({"messages": [{"role": "user", "content": [IMG, IMG, TXT]}]}, "messages", "this captioner needs exactly one image per request, got 2"),
    ({"messages": user("data:image/png;base64,@@@")}, "messages", "image_url: the data URL is not valid base64"),
    ({"messages": user(data_url(b"not a png"))}, "messages", "image_url: data URL is not a readable image"),
    ({"messages": user("/no/such/file.png")}, "messages", "image_url: no such image file: /no/such/file.png"),
    ({"messages": user("https://example.com/a.png")}, "messages", "image_url: remote URLs are not fetched by this server"),
]


@pytest.mark.parametrize(("change", "param", "message"), BAD, ids=[m for _, _, m in BAD])
def test_bad_parameters_are_400_with_the_param(echo, change, param, message):
    body = {"model": MODEL, "messages": user(data_url(png_bytes())), **change}
    with pytest.raises(openai.BadRequestError) as e:
        client(echo.url).chat.completions.create(**body)
    assert e.value.status_code == 400
    assert set(e.value.body) == {"message", "type", "param", "code"} and e.value.body["type"] == "invalid_request_error"
    assert e.value.body["param"] == param and e.value.body["message"].startswith(message), e.value.body


def test_200_concurrent_requests_get_their_own_answers(echo, images):
    """200 requests at once through AsyncOpenAI: 20 images x 10 prompts, 3 token limits; every answer names
    its own image and prompt, and the server answered them in far fewer backend calls than requests."""
    jobs = [(images[i % 20], f"prompt number {i}", 8 + i % 3) for i in range(200)]
    expected = [" ".join(f"image {digest(p)} 64x64: {prompt}".split()[:mt]) for p, prompt, mt in jobs]
    urls = {p: data_url(p.read_bytes()) for p in images}
    batches_before = len(echo.batcher.batches)

    async def main():
        async with openai.AsyncOpenAI(base_url=echo.url, api_key="-", max_retries=0, timeout=120) as c:
            return await asyncio.gather(*(c.chat.completions.create(model=MODEL, messages=user(urls[p], prompt), max_tokens=mt)
                                          for p, prompt, mt in jobs))

    answers = asyncio.run(main())
    assert [a.choices[0].message.content for a in answers] == expected
    assert len({a.id for a in answers}) == 200
    calls = echo.batcher.batches[batches_before:]
    assert sum(calls) == 200 and len(calls) < 100 and max(calls) <= 16


# ---------------------------------------------------------------------------------------- the batcher
class Recorder(EchoBackend):
    def __init__(self):
        super().__init__(MODEL, call_ms=50)
        self.calls: list[tuple[int, float]] = []

    def caption(self, images, prompts, **gen):
        self.calls.append((len(images), gen["temperature"]))
        return super().caption(images, prompts, **gen)


def test_batcher_groups_concurrent_requests_and_never_mixes_settings():
    backend = Recorder()
    ims = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(16)]

    async def main():
        batcher = Batcher(backend, max_size=8, wait_ms=50)
        batcher.start()
        futs = [batcher.submit(ims[i], f"p{i % 3}", GenSettings(0.0 if i < 10 else 0.5, 1.0, 5 + (i >= 10))) for i in range(16)]
        answers = await asyncio.gather(*futs)
        await batcher.stop()
        return answers

    answers = asyncio.run(main())
    assert [a.text for a in answers] == [EchoBackend.answer(ims[i], f"p{i % 3}", 5 + (i >= 10)) for i in range(16)]
    # usage counted with the answer: 1 word of prompt + 16 image tokens; "image <digest> 4x4: pN" cut to 5 or 6 words
    assert {(a.prompt_tokens, a.completion_tokens) for a in answers} == {(17, 4)}
    assert sum(n for n, _ in backend.calls) == 16 and 1 < max(n for n, _ in backend.calls) <= 8
    assert {t for _, t in backend.calls} == {0.0, 0.5}


# ----------------------------------------------------------------- the real captioner, the command line
def test_real_captioner_answers_like_each_alone_with_true_usage(server_url, captioner_export, images):
    from vlm.captioner import Captioner

    c = client(server_url, timeout=120)
    assert [m.id for m in c.models.list()] == [MODEL]
    prompts = ["Describe the product in the image.", "What product is this?"]
    bodies = [user(data_url(p.read_bytes()), prompts[i % 2]) for i, p in enumerate(images)]
    bodies[0][0]["content"][0]["image_url"]["url"] = str(images[0])  # a path on the server's disk works too

    alone = [c.chat.completions.create(model=MODEL, messages=m, temperature=0, max_tokens=12) for m in bodies]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        together = list(pool.map(lambda m: c.chat.completions.create(model=MODEL, messages=m, temperature=0, max_tokens=12), bodies))
    assert [r.choices[0].message.content for r in together] == [r.choices[0].message.content for r in alone]

    # usage: the chat-templated prompt as the LLM reads it, its one <image> expanded to the tower's tokens
    cap = Captioner.load(captioner_export, device="cpu")
    tok = cap.vlm.tokenizer
    for r, p in zip(alone[:2], prompts, strict=True):
        templated = tok.apply_chat_template([{"role": "user", "content": "<image>\n" + p}], add_generation_prompt=True, tokenize=True)
        ids = templated["input_ids"] if isinstance(templated, dict) or hasattr(templated, "keys") else templated
        assert r.usage.prompt_tokens == len(ids) - 1 + cap.vlm.num_image_tokens
        assert r.usage.prompt_tokens > cap.vlm.num_image_tokens  # the image counts (it used to be 4 in all)
        text = r.choices[0].message.content
        assert r.usage.completion_tokens == len(tok(text, add_special_tokens=False)["input_ids"])
    streamed = c.chat.completions.create(model=MODEL, messages=bodies[3], temperature=0, max_tokens=12, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices) == alone[3].choices[0].message.content


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
