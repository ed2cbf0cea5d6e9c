"""A small OpenAI-compatible chat client (stdlib HTTP) with retries and exponential backoff.

Retried: connection errors, timeouts, HTTP 408/409/429 and 5xx (a server that is busy or restarting).
Not retried: other 4xx (the request itself is wrong; retrying cannot help) and answers that are not the
chat-completions shape. A failure raises :class:`RequestFailed` with the server's own error message.
"""

from __future__ import annotations

import base64
import http.client
import json
import mimetypes
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


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


def _server_message(raw: bytes) -> str:
    try:
        body = json.loads(raw)
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(body, dict) and body.get("detail"):
            return str(body["detail"])
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    return raw[:200].decode("utf-8", errors="replace").strip() or "(empty body)"


class ChatClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def _once(self, method: str, path: str, body: dict | None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[Any, int]:
        """The decoded JSON answer and the number of attempts; :class:`RequestFailed` after the last retry."""
        attempt = 0
        while True:
            attempt += 1
            try:
                status, raw = self._once(method, path, body)
                if status < 300:
                    try:
                        return json.loads(raw), attempt
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        raise RequestFailed(f"{method} {path}: the answer is not JSON", attempt, status) from None
                message, retryable = f"HTTP {status}: {_server_message(raw)}", status in RETRY_STATUS
            except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", e)
                message, retryable, status = f"cannot reach {self.base_url} ({type(e).__name__}: {reason})", True, None
            if not retryable or attempt > self.retries:
                raise RequestFailed(message, attempt, status)
            delay = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
            time.sleep(delay * (0.5 + random.random() / 2))

    def models(self) -> list[str]:
        body, _ = self.request("GET", "/models")
        try:
            return [m["id"] for m in body["data"]]
        except (KeyError, TypeError):
            raise RequestFailed(f"GET {self.base_url}/models: not an OpenAI model list", 1) from None

    def chat(self, prompt: str, image: str, temperature: float, top_p: float, max_tokens: int) -> ChatResult:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": prompt}]}],
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
        }
        t0 = time.perf_counter()
        answer, attempts = self.request("POST", "/chat/completions", body)
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"]
            if text is not None and not isinstance(text, str):
                raise TypeError
        except (KeyError, IndexError, TypeError):
            raise RequestFailed("the answer is not a chat completion (no choices[0].message.content)", attempts) from None
        return ChatResult(text or "", choice.get("finish_reason"), answer.get("usage") or {}, attempts, time.perf_counter() - t0)

