"""The teacher's chat client: the official ``openai`` package against any OpenAI-compatible base URL.

Timeouts and retries are the ``openai`` client's own (``timeout``, ``max_retries``): connection errors,
timeouts, HTTP 408/409/429 and 5xx are retried with exponential backoff (0.5 s doubling up to 8 s, with
jitter; a server's ``Retry-After`` / ``retry-after-ms`` wins); other 4xx fail at once (the request itself is
wrong). A failure raises :class:`RequestFailed` with the server's own error message and the attempts made.
"""

from __future__ import annotations

import base64
import mimetypes
import time
from dataclasses import dataclass
from pathlib import Path

import openai


class RequestFailed(Exception):
    def __init__(self, message: str, attempts: int, status: int | None = None):
        super().__init__(message)
        self.message, self.attempts, self.status = message, attempts, status


@dataclass
class ChatResult:
    text: str
    finish_reason: str | None
    usage: dict
    attempts: int
    elapsed_s: float


def image_url(path: str | Path, transport: str = "data_url") -> str:
    """``data:<mime>;base64,...`` (works with any server) or ``file://`` (a server on this machine)."""
    path = Path(path)
    if transport == "path":
        return path.resolve().as_uri()
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _attempts(request) -> int:
    """The attempts behind a request the ``openai`` client sent (it numbers its retries in a header)."""
    try:
        return int(request.headers.get("x-stainless-retry-count", 0)) + 1
    except (AttributeError, ValueError):
        return 1


def _failure(e: openai.APIError, base_url: str) -> RequestFailed:
    if isinstance(e, openai.APIStatusError):
        body = e.body
        message = body.get("message") if isinstance(body, dict) else None
        return RequestFailed(f"HTTP {e.status_code}: {message or e.message}", _attempts(e.response.request), e.status_code)
    if isinstance(e, openai.APIConnectionError):
        cause = e.__cause__
        reason = f"{type(cause).__name__}: {cause}" if cause else e.message
        return RequestFailed(f"cannot reach {base_url} ({reason})", _attempts(e.request))
    return RequestFailed(f"the answer is not a chat completion ({type(e).__name__}: {e})", 1)


class ChatClient:
    """``chat(prompt, image, temperature, top_p, max_tokens) -> ChatResult`` and ``models() -> ids``; safe to
    share between threads (one ``openai.OpenAI`` with its connection pool)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 60.0, retries: int = 3):
        self.base_url = base_url.rstrip("/")
        self.model = model
        # A local server wants no key, but the openai client insists on one: any string will do there.
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "not-needed", timeout=float(timeout_s), max_retries=int(retries))

    def models(self) -> list[str]:
        try:
            return [m.id for m in self.client.models.list()]
        except openai.APIError as e:
            raise _failure(e, self.base_url) from None

    def chat(self, prompt: str, image: str, temperature: float, top_p: float, max_tokens: int) -> ChatResult:
        t0 = time.perf_counter()
        try:
            raw = self.client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": prompt}]}],
                temperature=temperature,
                top_p=top_p,
                max_tokens=max_tokens,
            )
            answer = raw.parse()
        except openai.APIError as e:
            raise _failure(e, self.base_url) from None
        attempts = raw.retries_taken + 1
        if not answer.choices or not isinstance(answer.choices[0].message.content, str | None):
            raise RequestFailed("the answer is not a chat completion (no choices[0].message.content)", attempts)
        choice = answer.choices[0]
        usage = answer.usage.model_dump(exclude_none=True) if answer.usage else {}
        return ChatResult(choice.message.content or "", choice.finish_reason, usage, attempts, time.perf_counter() - t0)
