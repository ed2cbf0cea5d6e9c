"""The FastAPI app: ``POST /v1/chat/completions``, ``GET /v1/models[/{id}]``, ``GET /health``.

Requests are validated by the pydantic models of :mod:`.schemas`; every failure, whoever raises it (pydantic,
FastAPI's routing, the body limit, the image decoder, a busy queue, the model), is answered with
``{"error": {"message", "type", "param", "code"}}`` and the server carries on.

``stream=true`` answers with server-sent events in OpenAI's chunk format (``chat.completion.chunk`` objects,
then ``data: [DONE]``). The backend writes whole captions, so the stream starts once the caption is done and
carries it in a few chunks of words (the concatenated deltas are exactly the non-streamed answer);
``stream_options.include_usage`` adds the usage chunk. A client that disconnects before its batch runs is
dropped from the batch.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .backends import Backend
from .batcher import Answer, Batcher, GenSettings
from .errors import ClientError, error_body
from .images import MAX_IMAGE_PIXELS, decode_image
from .schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ErrorBody,
    ModelCard,
    ModelList,
    Usage,
    error_param,
)

MAX_BODY_BYTES = 32 * 1024 * 1024
WORDS_PER_CHUNK = 4
ERRORS = {s: {"model": ErrorBody} for s in (400, 404, 408, 413, 500, 503)}


class BodyGuard:
    """ASGI middleware in front of the app: a ``Content-Length`` over ``max_bytes`` is a 413 before a byte is
    read (the route's own ``max_body_size`` counts a chunked body while it arrives), and a body that stops
    arriving for ``timeout_s`` is a 408 (a slowloris client would otherwise hold its handler forever)."""

    def __init__(self, app: ASGIApp, timeout_s: float, max_bytes: int):
        self.app, self.timeout_s, self.max_bytes = app, timeout_s, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse(error_body(f"request body larger than {self.max_bytes} bytes", "invalid_request_error"), status_code=413)
            return await response(scope, receive, send)
        state = {"complete": False}

        async def timed_receive() -> Message:
            if state["complete"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                raise HTTPException(408, f"the request body stopped arriving for {self.timeout_s:g} s") from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["complete"] = True
            return message

        await self.app(scope, timed_receive, send)


def _pieces(text: str, words: int = WORDS_PER_CHUNK) -> list[str]:
    """``text`` in pieces of ``words`` words (whitespace kept), so that ``"".join(pieces) == text``."""
    tokens = re.findall(r"\s+|\S+\s*", text)
    if tokens and tokens[0].isspace() and len(tokens) > 1:
        tokens[1] = tokens[0] + tokens[1]
        tokens = tokens[1:]
    return ["".join(tokens[i : i + words]) for i in range(0, len(tokens), words)] or [""]


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(
    backend: Backend,
    max_batch: int = 16,
    wait_ms: float = 5.0,
    max_tokens_limit: int = 256,
    allow_files: bool = True,
    max_queue: int = 1024,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    body_timeout_s: float = 30.0,
) -> FastAPI:
    """The app; ``app.state.batcher`` is its :class:`Batcher` (started and stopped with the app's lifespan)."""
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.batcher = Batcher(backend, max_size=max_batch, wait_ms=wait_ms, max_queue=max_queue)
        app.state.batcher.start()
        yield
        await app.state.batcher.stop()

    app = FastAPI(title="vlm.serve", summary="a brand captioner behind the OpenAI chat-completions API", lifespan=lifespan)
    app.add_middleware(BodyGuard, timeout_s=body_timeout_s, max_bytes=max_body_bytes)

    def error(status: int, message: str, type: str, param: str | None = None, code: str | None = None, headers=None) -> JSONResponse:
        return JSONResponse(error_body(message, type, param, code), status_code=status, headers=headers)

    @app.exception_handler(ClientError)
    async def client_error(request: Request, e: ClientError) -> JSONResponse:
        return error(e.status, e.message, e.type, e.param, e.code, e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        # a union (content: str | list of parts) reports one error per branch: the deepest one says most
        first = max(errors, key=lambda err: len(err["loc"]))
        if first["type"] == "json_invalid":
            return error(400, f"the request body is not valid JSON ({first.get('ctx', {}).get('error', first['msg'])})", "invalid_request_error")
        param, path = error_param(tuple(first["loc"]))
        if not path:  # the body as a whole (not an object, or no JSON content type)
            return error(400, f"the request body must be a JSON object ({first['msg']})", "invalid_request_error")
        msg = first["msg"].removeprefix("Value error, ")
        return error(400, f"{path}: {msg}", "invalid_request_error", param, first["type"])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        if e.status_code == 413:
            return error(413, f"request body larger than {max_body_bytes} bytes", "invalid_request_error")
        if e.status_code == 408:
            return error(408, str(e.detail), "invalid_request_error")
        if e.status_code == 400:  # FastAPI's "There was an error parsing the body": bad UTF-8, nesting too deep
            return error(400, f"the request body is not valid JSON ({e.detail})", "invalid_request_error")
        kind = "NotFoundError" if e.status_code == 404 else "invalid_request_error"
        return error(e.status_code, f"{request.method} {request.url.path}: {e.detail}", kind)

    @app.exception_handler(Exception)
    async def server_error(request: Request, e: Exception) -> JSONResponse:
        return error(500, f"internal error: {type(e).__name__}", "server_error")

    def not_found(model: str) -> ClientError:
        return ClientError(f"the model '{model}' does not exist; this server serves '{backend.name}'", status=404,
                           type="NotFoundError", param="model", code="model_not_found")

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=backend.name, created=started)])

    @app.get("/v1/models/{model_id}", response_model=ModelCard, responses=ERRORS)
    async def model(model_id: str) -> ModelCard:
        if model_id != backend.name:
            raise not_found(model_id)
        return ModelCard(id=backend.name, created=started)

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        b: Batcher = request.app.state.batcher
        body = {"status": "ok" if b.alive() else "error", "model": backend.name, "batches": len(b.batches),
                "max_batch_seen": max(b.batches, default=0), "waiting": b.waiting(), "dropped": b.dropped,
                "failed_calls": b.failed_calls}
        return JSONResponse(body, status_code=200 if b.alive() else 503)

    def settings(body: ChatCompletionRequest) -> GenSettings:
        key = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        max_tokens = getattr(body, key) or max_tokens_limit
        if max_tokens > max_tokens_limit:
            raise ClientError(f"{key}: at most {max_tokens_limit} on this server, got {max_tokens}", param=key)
        top_p = 1.0 if body.top_p is None else body.top_p
        return GenSettings(body.temperature or 0.0, top_p, max_tokens, body.seed)

    @app.post("/v1/chat/completions", response_model=ChatCompletion, responses=ERRORS, max_body_size=max_body_bytes)
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        if body.model and body.model != backend.name:
            raise not_found(body.model)
        urls = body.image_urls()
        if len(urls) != 1:
            raise ClientError(f"this captioner needs exactly one image per request, got {len(urls)}", param="messages")
        gen = settings(body)
        prompt = "\n".join(body.texts())
        image = await run_in_threadpool(decode_image, urls[0], allow_files, max_image_pixels)  # decoding is CPU work

        answer = request.app.state.batcher.submit(image, prompt, gen)
        left = asyncio.ensure_future(_until_disconnected(request))
        try:
            await asyncio.wait({answer, left}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
        if not answer.done():  # the client went away: drop its job (if its batch has not started yet)
            answer.cancel()
            return Response(status_code=499)
        try:
            done: Answer = answer.result()
        except Exception as e:
            return error(500, f"the model failed: {type(e).__name__}: {e}", "server_error")

        text, p_tok, c_tok = done.text, done.prompt_tokens, done.completion_tokens
        usage = Usage(prompt_tokens=p_tok, completion_tokens=c_tok, total_tokens=p_tok + c_tok)
        finish = "length" if c_tok >= gen.max_new_tokens else "stop"
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not body.stream:
            whole = ChatCompletion(id=rid, created=created, model=backend.name, usage=usage,
                                   choices=[Choice(message=AssistantMessage(content=text), finish_reason=finish)])
            return JSONResponse(whole.model_dump())

        with_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def events() -> AsyncIterator[str]:
            def chunk(delta: Delta, finish_reason=None, choices=True, usage=None) -> str:
                c = ChatCompletionChunk(id=rid, created=created, model=backend.name, usage=usage,
                                        choices=[ChunkChoice(delta=delta, finish_reason=finish_reason)] if choices else [])
                return f"data: {json.dumps(c.model_dump(exclude_none=True))}\n\n"

            yield chunk(Delta(role="assistant", content=""))
            for piece in _pieces(text):
                if piece:
                    yield chunk(Delta(content=piece))
            yield chunk(Delta(), finish_reason=finish)
            if with_usage:
                yield chunk(Delta(), choices=False, usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app
