"""``vlm.serve`` under faults (a real uvicorn server on loopback, in-process): a client that disconnects
mid-request, slow clients that send half a body, a backend that raises, bodies too big or not JSON, a
decompression bomb. After each, the server answers the next request. Raw HTTP only for what the ``openai``
client cannot send (a body cut short, a chunked body without end, malformed JSON)."""

from __future__ import annotations

import concurrent.futures
import http.client
import io
import json
import socket
import threading
import time
from pathlib import Path

import openai
import pytest
from PIL import Image

from tests.vlm.live_server import MODEL, LiveServer, data_url, png_bytes, user
from vlm.serving.app import MAX_BODY_BYTES
from vlm.serving.backends import EchoBackend
from vlm.serving.images import MAX_IMAGE_PIXELS


class Faulty(EchoBackend):
    """The echo backend, except: a prompt "boom" makes the call raise; a prompt "hold" blocks the call until
    ``release`` is set (so a test knows a call is running while it does something else)."""

    def __init__(self):
        super().__init__(MODEL)
        self.entered, self.release = threading.Event(), threading.Event()

    def caption(self, images, prompts, **gen):
        if "boom" in prompts:
            raise RuntimeError("model exploded")
        if "hold" in prompts:
            self.entered.set()
            assert self.release.wait(30), "the test never released the held call"
        return super().caption(images, prompts, **gen)


@pytest.fixture(scope="module")
def faulty():
    backend = Faulty()
    live = LiveServer(backend, max_batch=8, wait_ms=0, max_tokens_limit=64, body_timeout_s=1.0)
    live.backend = backend
    yield live
    backend.release.set()
    live.close()


def client(url: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="-", max_retries=0, timeout=kw.pop("timeout", 30), **kw)


def still_answers(live: LiveServer) -> None:
    r = client(live.url).chat.completions.create(model=MODEL, messages=user(data_url(png_bytes((9, 9, 9))), "still there?"))
    assert r.choices[0].message.content.endswith("16x16: still there?")


def health(live: LiveServer) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    conn.request("GET", "/health")
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body


def post_raw(live: LiveServer, raw: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", body=raw, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


def test_a_backend_that_raises_fails_its_request_only(faulty):
    with pytest.raises(openai.InternalServerError) as e:
        client(faulty.url).chat.completions.create(model=MODEL, messages=user(data_url(png_bytes()), "boom"))
    assert e.value.body == {"message": "the model failed: RuntimeError: model exploded", "type": "server_error", "param": None, "code": None}
    still_answers(faulty)
    h = health(faulty)
    assert h["status"] == "ok" and h["failed_calls"] == 1


def test_a_client_that_disconnects_mid_request_is_dropped(faulty):
    """While one call runs (held), a second client gives up waiting; its job is dropped before its batch."""
    backend = faulty.backend
    backend.entered.clear()
    backend.release.clear()
    holder = threading.Thread(target=lambda: client(faulty.url).chat.completions.create(model=MODEL, messages=user(data_url(png_bytes()), "hold")))
    holder.start()
    assert backend.entered.wait(30)
    dropped, batches = health(faulty)["dropped"], len(faulty.batcher.batches)
    with pytest.raises(openai.APITimeoutError):
        client(faulty.url, timeout=0.5).chat.completions.create(model=MODEL, messages=user(data_url(png_bytes((1, 1, 1))), "impatient"))
    deadline = time.monotonic() + 20
    while health(faulty)["waiting"] > 1 and time.monotonic() < deadline:  # the server notices the disconnect
        time.sleep(0.05)
    assert health(faulty)["waiting"] == 1  # the held request alone
    backend.release.set()
    holder.join(30)
    still_answers(faulty)
    assert health(faulty)["dropped"] == dropped + 1
    assert faulty.batcher.batches[batches:] == [1]  # the held call only; the next request's call came after

    # a client that sends half its body and hangs up
    with socket.create_connection(("127.0.0.1", faulty.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": ")
    still_answers(faulty)


def test_a_full_queue_is_503_with_retry_after_and_drains():
    backend = Faulty()
    live = LiveServer(backend, max_batch=1, wait_ms=0, max_queue=1)
    try:
        pool = concurrent.futures.ThreadPoolExecutor(2)
        ask = lambda prompt: client(live.url).chat.completions.create(model=MODEL, messages=user(data_url(png_bytes()), prompt))  # noqa: E731
        held = pool.submit(ask, "hold")
        assert backend.entered.wait(30)
        queued = pool.submit(ask, "queued")
        deadline = time.monotonic() + 20
        while live.batcher.queue.qsize() < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(openai.APIStatusError) as e:
            ask("one too many")
        assert e.value.status_code == 503 and e.value.response.headers["retry-after"] == "1"
        assert e.value.body["type"] == "server_busy" and e.value.body["message"] == "the server is busy (1 requests waiting); retry later"
        backend.release.set()
        assert held.result(30).choices[0].message.content.endswith(": hold")
        assert queued.result(30).choices[0].message.content.endswith(": queued")
        still_answers(live)
    finally:
        backend.release.set()
        live.close()


def test_slow_clients_sending_half_a_body_get_408_and_block_nobody(faulty):
    slow = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", faulty.port), timeout=20)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"messages\": [")
        slow.append(s)
    still_answers(faulty)  # while twenty bodies hang half-sent
    for s in slow:
        resp = http.client.HTTPResponse(s)
        resp.begin()
        status, body = resp.status, json.loads(resp.read())
        s.close()
        assert status == 408 and body["error"]["message"] == "the request body stopped arriving for 1 s"
    still_answers(faulty)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_an_endless_chunked_body_is_cut_at_the_limit_while_it_streams(faulty):
    """A body without Content-Length is counted while it arrives: 413 at the limit, never buffered whole."""
    before = _rss_kb()
    conn = http.client.HTTPConnection("127.0.0.1", faulty.port, timeout=60)
    conn.putrequest("POST", "/v1/chat/completions")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk, sent = b"x" * (1 << 20), 0
    try:
        while sent < 4 * MAX_BODY_BYTES:
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and stopped reading: what it should do
    grew_mb = (_rss_kb() - before) / 1024
    resp = conn.getresponse()
    status, body = resp.status, json.loads(resp.read())
    conn.close()
    assert status == 413 and body["error"]["message"] == f"request body larger than {MAX_BODY_BYTES} bytes"
    assert grew_mb < 2 * MAX_BODY_BYTES / 2**20, f"RSS grew {grew_mb:.0f} MB for a {sent >> 20} MB body"
    status, body = post_raw(faulty, b"x" * (MAX_BODY_BYTES + 1))  # with a Content-Length: refused up front
    assert status == 413
    still_answers(faulty)


@pytest.mark.parametrize(("raw", "message"), [
    (b"{not json", "the request body is not valid JSON (Expecting property name enclosed in double quotes)"),
    (b"\xff\xfe", "the request body is not valid JSON"),
    (b"[" * 200_000 + b"]" * 200_000, "the request body is not valid JSON"),
    (b"[]", "the request body must be a JSON object"),
])
def test_malformed_json_is_400(faulty, raw, message):
    status, body = post_raw(faulty, raw)
    assert status == 400 and set(body) == {"error"} and body["error"]["message"].startswith(message), body
    still_answers(faulty)


@pytest.mark.parametrize("key", ["temperature", "top_p"])
def test_non_finite_numbers_are_400(faulty, key):
    """Python's JSON reader takes NaN and Infinity; they must not pass a range check."""
    raw = json.dumps({"model": MODEL, "messages": user(data_url(png_bytes())), key: float("nan")}).encode()
    assert b"NaN" in raw
    status, body = post_raw(faulty, raw)
    assert status == 400 and body["error"]["param"] == key and body["error"]["message"] == f"{key}: Input should be a finite number"


def test_a_decompression_bomb_is_refused_from_its_header(faulty):
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, format="PNG")  # compresses to a few KB
    with pytest.raises(openai.APIStatusError) as e:
        client(faulty.url).chat.completions.create(model=MODEL, messages=user(data_url(buf.getvalue())))
    assert e.value.status_code == 413 and f"{side}x{side} pixels" in e.value.body["message"]
    still_answers(faulty)
