"""A real uvicorn server on a free loopback port, in this process (a thread), serving a :mod:`vlm.serving` app."""

from __future__ import annotations

import base64
import io
import threading
import time

from PIL import Image

from vlm.serve import bind, server
from vlm.serving.app import create_app

MODEL = "vlm-captioner"


class LiveServer:
    def __init__(self, backend, **app_kwargs):
        self.app = create_app(backend, **app_kwargs)
        sock = bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = self.root + "/v1"
        self.server = server(self.app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.01)

    @property
    def batcher(self):
        return self.app.state.batcher

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def png_bytes(color=(200, 30, 30), size=16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def data_url(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def user(image_url: str, text: str = "Describe the product in the image.") -> list[dict]:
    """One user message: an image part and a text part (what the annotation client sends)."""
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": text}]}]
