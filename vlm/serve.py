"""``python -m vlm.serve``: a captioner behind the OpenAI chat-completions API, batching concurrent requests.

    python -m vlm.serve                                   # the embedded default captioner on 127.0.0.1:8000
    python -m vlm.serve checkpoint=/path/to/run/dir port=0   # a trained checkpoint; port 0 = a free port

Endpoints: ``POST /v1/chat/completions`` (messages whose content is text and ``image_url`` parts; the URL is a
``data:image/...;base64,...`` URL, a ``file://`` URL or a plain path on the server's disk), ``GET /v1/models``,
``GET /health``. Generation settings: ``temperature`` (0 = greedy), ``top_p``, ``max_tokens``.

Requests that arrive within ``batch.wait_ms`` of each other (up to ``batch.max_size``) are answered by one
batched call of the backend, grouped by their generation settings. Client mistakes get a 4xx JSON body
``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``; the server never crashes on one.

The backend is anything with ``caption(images, prompts, temperature=, top_p=, max_new_tokens=) -> list[str]``
(see :class:`Backend`); the default wraps :class:`vlm.captioner.Captioner`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import inspect
import io
import json
import logging
import math
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096  # checked from the image header, before any pixel is decoded


# --------------------------------------------------------------------------------------------- backends
class Backend(Protocol):
    """What the server needs from a model: batched captions, one per (image, prompt)."""

    name: str

    def caption(self, images: list[Image.Image], prompts: list[str], *, temperature: float, top_p: float, max_new_tokens: int) -> list[str]:
        """One answer per (image, prompt); ``temperature=0`` is greedy. A backend that also takes ``seed=``
        gets the request's ``seed`` when one is given."""
        ...


class CaptionerBackend:
    """:class:`vlm.captioner.Captioner` as a backend: a trained export dir, or (``checkpoint=None``) the newest
    export under ``logs/vlm.train`` (what ``python -m vlm.train`` leaves behind)."""

    def __init__(self, checkpoint: str | None = None, name: str = "vlm-captioner", device: str | None = None):
        from vlm.captioner import Captioner

        self.captioner = Captioner.load(checkpoint, device=device)
        self.name = name
        params = inspect.signature(self.captioner.caption).parameters
        first = next(iter(p for p in params if p not in ("self", "images")), "prompt")
        # A captioner that takes one prompt per image answers a mixed batch in one call; one that takes a single
        # prompt for the whole batch is called once per distinct prompt.
        self._per_image_prompts = first == "prompts"
        self._prompt_kw = first
        self._takes_seed = "seed" in params
        self.tokenizer = getattr(self.captioner, "tokenizer", None) or getattr(getattr(self.captioner, "vlm", None), "tokenizer", None)

    def caption(self, images, prompts, *, temperature, top_p, max_new_tokens, seed=None):
        gen: dict[str, Any] = dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
        if seed is not None and self._takes_seed:
            gen["seed"] = seed
        if self._per_image_prompts:
            return list(self.captioner.caption(images, prompts, **gen))
        out: list[str | None] = [None] * len(images)
        by_prompt: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            by_prompt.setdefault(p, []).append(i)
        for p, idx in by_prompt.items():
            answers = self.captioner.caption([images[i] for i in idx], **{self._prompt_kw: p or None}, **gen)
            for i, a in zip(idx, answers, strict=True):
                out[i] = a
        return out  # type: ignore[return-value]

    def count_tokens(self, text: str) -> int:
        tok = self.tokenizer
        if tok is not None:
            try:
                enc = tok.encode(text) if hasattr(tok, "encode") else tok(text)["input_ids"]
                return len(getattr(enc, "ids", enc))
            except Exception:  # a tokenizer with another API: fall back to words
                pass
        return len(text.split())


# ------------------------------------------------------------------------------------------------ errors
class ClientError(Exception):
    """A request the client has to fix; becomes a 4xx JSON error."""

    def __init__(self, message: str, status: int = 400, type: str = "invalid_request_error", param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.status, self.type, self.param, self.code = message, status, type, param, code


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# ------------------------------------------------------------------------------------------ request parsing
@dataclass(frozen=True)
class GenSettings:
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int | None = None


@dataclass
class ParsedRequest:
    image: Image.Image
    prompt: str
    gen: GenSettings
    model: str


def _number(body: dict, key: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClientError(f"'{key}' must be a number, got {type(value).__name__}", param=key)
    if not math.isfinite(value):
        raise ClientError(f"'{key}' must be a finite number, got {value}", param=key)
    if value < lo or value > hi or (lo_open and value == lo):
        raise ClientError(f"'{key}' must be in {'(' if lo_open else '['}{lo}, {hi}], got {value}", param=key)
    return float(value)


def decode_image(url: str, allow_files: bool = True) -> Image.Image:
    """A data URL, a ``file://`` URL or a plain path → an RGB image; :class:`ClientError` when it is not one."""
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        if not sep or ";base64" not in head:
            raise ClientError("image_url: a data URL must look like data:image/png;base64,<data>", param="messages")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError("image_url: the data URL is not valid base64", param="messages") from None
        source: Any = io.BytesIO(raw)
        where = "data URL"
    elif url.startswith(("http://", "https://")):
        raise ClientError("image_url: remote URLs are not fetched by this server; send a data URL or a file path", param="messages")
    else:
        if not allow_files:
            raise ClientError("image_url: file paths are disabled on this server; send a data URL", param="messages")
        path = Path(unquote(urlparse(url).path) if url.startswith("file://") else url)
        if not path.is_file():
            raise ClientError(f"image_url: no such image file: {path}", param="messages")
        source, where = path, str(path)
    try:
        with Image.open(source) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ClientError(f"image_url: {where} is {w}x{h} pixels, more than this server's {MAX_IMAGE_PIXELS}",
                                  status=413, param="messages")
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ClientError(f"image_url: {where} is not a readable image", param="messages") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """The request body as JSON; NaN / Infinity (which Python's json accepts) and pathological nesting are
    client errors, not a 500 or a number that passes every range check."""
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise ClientError("the request body nests too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise ClientError(f"the request body is not valid JSON ({e.__class__.__name__}: {e})") from None


def parse_request(body: Any, model_name: str, max_tokens_limit: int, allow_files: bool = True) -> ParsedRequest:
    """Validate a chat-completions body; the first problem found raises :class:`ClientError`."""
    if not isinstance(body, dict):
        raise ClientError("the request body must be a JSON object")
    model = body.get("model", model_name)
    if model is not None and not isinstance(model, str):
        raise ClientError("'model' must be a string", param="model")
    if model and model != model_name:
        raise ClientError(f"the model '{model}' does not exist; this server serves '{model_name}'", status=404, type="NotFoundError", param="model", code="model_not_found")
    if body.get("stream"):
        raise ClientError("streaming is not supported by this server", param="stream")
    n = body.get("n", 1)
    if n not in (1, None):
        raise ClientError("only n=1 is supported", param="n")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ClientError("'messages' must be a non-empty list", param="messages")
    texts: list[str] = []
    urls: list[str] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise ClientError(f"messages[{i}] must be an object", param="messages")
        role = msg.get("role")
        if role not in ("system", "user", "assistant", "developer"):
            raise ClientError(f"messages[{i}].role must be system, user or assistant, got {role!r}", param="messages")
        content = msg.get("content")
        if isinstance(content, str):
            parts: list = [{"type": "text", "text": content}]
        elif isinstance(content, list):
            parts = content
        else:
            raise ClientError(f"messages[{i}].content must be a string or a list of parts", param="messages")
        for j, part in enumerate(parts):
            where = f"messages[{i}].content[{j}]"
            if not isinstance(part, dict):
                raise ClientError(f"{where} must be an object", param="messages")
            kind = part.get("type")
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise ClientError(f"{where}.text must be a string", param="messages")
                if role != "assistant" and part["text"].strip():
                    texts.append(part["text"].strip())
            elif kind == "image_url":
                ref = part.get("image_url")
                url = ref.get("url") if isinstance(ref, dict) else ref
                if not isinstance(url, str) or not url:
                    raise ClientError(f"{where}.image_url must be {{\"url\": \"...\"}}", param="messages")
                if role != "user":
                    raise ClientError(f"{where}: images are only accepted in user messages", param="messages")
                urls.append(url)
            else:
                raise ClientError(f"{where}.type must be 'text' or 'image_url', got {kind!r}", param="messages")
    if len(urls) != 1:
        raise ClientError(f"this captioner needs exactly one image per request, got {len(urls)}", param="messages")
    temperature = _number(body, "temperature", 0.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = max_tokens_limit
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= max_tokens_limit:
        raise ClientError(f"'max_tokens' must be an integer in [1, {max_tokens_limit}], got {max_tokens!r}", param="max_tokens")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or abs(seed) >= 2**63):
        raise ClientError(f"'seed' must be an integer in (-2^63, 2^63), got {seed!r}", param="seed")
    image = decode_image(urls[0], allow_files=allow_files)
    return ParsedRequest(image=image, prompt="\n".join(texts), gen=GenSettings(temperature, top_p, max_tokens, seed), model=model_name)


# ------------------------------------------------------------------------------------------------ batching
def _gen_kwargs(gen: GenSettings) -> dict:
    kw: dict[str, Any] = {"temperature": gen.temperature, "top_p": gen.top_p, "max_new_tokens": gen.max_new_tokens}
    if gen.seed is not None:  # only backends that take a seed are sent one
        kw["seed"] = gen.seed
    return kw


@dataclass
class _Job:
    request: ParsedRequest
    future: asyncio.Future = field(repr=False)


class Batcher:
    """A queue and one worker: requests arriving within ``wait_ms`` of the first go into one backend call.

    The backend runs on a single worker thread, so the event loop keeps accepting requests meanwhile and the
    model is never called from two threads at once. Jobs with different generation settings go into
    separate calls (the backend takes one set of settings per call).
    """

    def __init__(self, backend: Backend, max_size: int = 16, wait_ms: float = 5.0, max_queue: int = 1024):
        self.backend = backend
        self.max_size = max(1, int(max_size))
        self.wait = max(0.0, float(wait_ms)) / 1000.0
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.max_queue = int(max_queue)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlm-serve-model")
        self.task: asyncio.Task | None = None
        self.batches: list[int] = []  # sizes of the backend calls made, for /health and tests

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, request: ParsedRequest) -> str:
        if self.queue.qsize() >= self.max_queue:
            raise ClientError(f"the server is busy ({self.max_queue} requests waiting); retry later", status=503, type="server_busy")
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(request, fut))
        return await fut

    async def _collect(self) -> list[_Job]:
        jobs = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while len(jobs) < self.max_size:
            timeout = deadline - loop.time()
            if timeout <= 0:
                while len(jobs) < self.max_size and not self.queue.empty():
                    jobs.append(self.queue.get_nowait())
                break
            try:
                jobs.append(await asyncio.wait_for(self.queue.get(), timeout))
            except TimeoutError:
                break
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            groups: dict[GenSettings, list[_Job]] = {}
            calls: list[tuple[GenSettings, list[_Job]]] = []
            for job in jobs:
                if job.future.done():  # a client that went away cancels its future
                    continue
                gen = job.request.gen
                if gen.seed is not None and gen.temperature > 0:
                    calls.append((gen, [job]))  # seeded sampling alone, so the seed alone decides the answer
                else:
                    groups.setdefault(gen, []).append(job)
            calls += list(groups.items())
            for gen, group in calls:
                images = [j.request.image for j in group]
                prompts = [j.request.prompt for j in group]
                self.batches.append(len(group))
                try:
                    answers = await loop.run_in_executor(
                        self.pool,
                        lambda images=images, prompts=prompts, gen=gen: self.backend.caption(images, prompts, **_gen_kwargs(gen)),
                    )
                    if len(answers) != len(group):
                        raise RuntimeError(f"backend returned {len(answers)} answers for {len(group)} requests")
                except Exception as e:  # the model's fault, not the client's: a 500 for this batch only
                    log.exception("backend failed on a batch of %d", len(group))
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(e)
                    continue
                for j, a in zip(group, answers, strict=True):
                    if not j.future.done():
                        j.future.set_result(str(a))


# ------------------------------------------------------------------------------------------------- the app
def _count(backend: Backend, text: str) -> int:
    counter = getattr(backend, "count_tokens", None)
    return int(counter(text)) if counter else len(text.split())


def create_app(backend: Backend, max_batch: int = 16, wait_ms: float = 5.0, max_tokens_limit: int = 256, allow_files: bool = True, max_queue: int = 1024):
    """The Starlette app; ``app.state.batcher`` is the batcher (started with the app's lifespan)."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    started = int(time.time())

    def error(status: int, message: str, type: str, param: str | None = None, code: str | None = None) -> JSONResponse:
        return JSONResponse(error_body(message, type, param, code), status_code=status)

    async def chat(request: Request) -> JSONResponse:
        too_big = error(413, f"request body larger than {MAX_BODY_BYTES} bytes", "invalid_request_error")
        if request.headers.get("content-length", "").isdigit() and int(request.headers["content-length"]) > MAX_BODY_BYTES:
            return too_big
        chunks, size = [], 0
        async for chunk in request.stream():  # a chunked body has no Content-Length: count while it arrives
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return too_big
            chunks.append(chunk)
        try:
            body = parse_json(b"".join(chunks))
        except ClientError as e:
            return error(e.status, e.message, e.type, e.param, e.code)
        try:
            # Decoding an image is CPU work; keep it off the event loop.
            parsed = await asyncio.get_running_loop().run_in_executor(None, parse_request, body, backend.name, max_tokens_limit, allow_files)
        except ClientError as e:
            return error(e.status, e.message, e.type, e.param, e.code)
        try:
            text = await request.app.state.batcher.submit(parsed)
        except ClientError as e:
            return error(e.status, e.message, e.type, e.param, e.code)
        except Exception as e:
            return error(500, f"the model failed: {type(e).__name__}: {e}", "server_error")
        prompt_tokens, completion_tokens = _count(backend, parsed.prompt), _count(backend, text)
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": backend.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "length" if completion_tokens >= parsed.gen.max_new_tokens else "stop",
                    }
                ],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
            }
        )

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": backend.name, "object": "model", "created": started, "owned_by": "mlmono"}]})

    async def health(request: Request) -> JSONResponse:
        b = request.app.state.batcher
        alive = b.task is not None and not b.task.done()
        body = {"status": "ok" if alive else "error", "model": backend.name, "batches": len(b.batches), "max_batch_seen": max(b.batches, default=0), "waiting": b.queue.qsize()}
        return JSONResponse(body, status_code=200 if alive else 503)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "NotFoundError" if exc.status_code == 404 else "invalid_request_error"
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", kind)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error: {type(exc).__name__}", "server_error")

    @asynccontextmanager
    async def lifespan(app):
        app.state.batcher = Batcher(backend, max_size=max_batch, wait_ms=wait_ms, max_queue=max_queue)
        app.state.batcher.start()
        yield
        await app.state.batcher.stop()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 = a free one): clients may connect as soon as this returns."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(app, sock: socket.socket, log_level: str = "warning") -> None:
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=log_level in ("debug", "info"), lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def _announce(host: str, port: int, name: str, out=sys.stdout) -> None:
    shown = f"[{host}]" if ":" in host else host
    print(f"vlm.serve: serving '{name}' on http://{shown}:{port}/v1", file=out, flush=True)


def run_from_config(cfg) -> None:
    """Load the backend, bind, announce the address (``port: 0`` picks a free one), serve until stopped."""
    import hydra.utils

    from common.errors import ConfigError

    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.get("allow_remote", False):
        raise ConfigError(f"host: {cfg.host!r} would expose the server beyond this machine; set allow_remote=true to mean it")
    if isinstance(cfg.port, bool) or not isinstance(cfg.port, int):
        raise ConfigError(f"port: must be an integer in [0, 65535], got {cfg.port!r}")
    if not 0 <= cfg.port <= 65535:
        raise ConfigError(f"port: must be in [0, 65535], got {cfg.port}")
    from hydra.errors import InstantiationException

    from common.errors import UserError

    try:
        backend = hydra.utils.instantiate(cfg.backend)
    except InstantiationException as e:  # a bad checkpoint is the user's to fix: say so in one line
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        raise
    try:
        sock = bind(cfg.host, int(cfg.port))
    except OSError as e:
        raise ConfigError(f"port: cannot listen on {cfg.host}:{cfg.port} ({e.strerror or e})") from None
    app = create_app(backend, max_batch=cfg.batch.max_size, wait_ms=cfg.batch.wait_ms, max_tokens_limit=cfg.max_tokens_limit, allow_files=cfg.allow_file_urls, max_queue=cfg.batch.max_queue)
    _announce(cfg.host, sock.getsockname()[1], backend.name)
    serve(app, sock, log_level=cfg.log_level)


def _main() -> None:
    from common import entry

    entry.main("vlm", config_name="serve")(run_from_config)()


if __name__ == "__main__":
    _main()


__all__: Sequence[str] = ("Backend", "Batcher", "CaptionerBackend", "ClientError", "create_app", "decode_image", "parse_request")
