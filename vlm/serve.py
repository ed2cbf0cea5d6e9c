"""``python -m vlm.serve``: a captioner behind the OpenAI chat-completions API, batching concurrent requests.

    python -m vlm.serve                                      # the newest trained captioner on 127.0.0.1:8000
    python -m vlm.serve checkpoint=/path/to/run/dir port=0   # a trained checkpoint; port 0 = a free port
    python -m vlm.serve backend=echo                         # no model: answers name their image and prompt

Endpoints: ``POST /v1/chat/completions`` (messages whose content is text and ``image_url`` parts; the URL is a
``data:image/...;base64,...`` URL, a ``file://`` URL or a plain path on the server's disk; ``stream=true``
answers with server-sent events), ``GET /v1/models``, ``GET /health``. Talk to it with any OpenAI client:
``openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-")``. The app lives in :mod:`vlm.serving`.
"""

from __future__ import annotations

import socket
import sys


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 = a free one): clients may connect as soon as this returns."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def server(app, log_level: str = "warning"):
    """A :class:`uvicorn.Server` for ``app`` (``.run(sockets=[sock])`` serves until stopped)."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=log_level in ("debug", "info"), lifespan="on")
    return uvicorn.Server(config)


def app_from_config(cfg, backend):
    from vlm.serving.app import create_app

    return create_app(backend, max_batch=cfg.batch.max_size, wait_ms=cfg.batch.wait_ms, max_tokens_limit=cfg.max_tokens_limit,
                      allow_files=cfg.allow_file_urls, max_queue=cfg.batch.max_queue, body_timeout_s=cfg.body_timeout_s)


def run_from_config(cfg) -> None:
    """Load the backend, bind, announce the address (``port: 0`` picks a free one), serve until stopped."""
    import hydra.utils
    from hydra.errors import InstantiationException

    from common.errors import ConfigError, UserError

    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.get("allow_remote", False):
        raise ConfigError(f"host: {cfg.host!r} would expose the server beyond this machine; set allow_remote=true to mean it")
    if isinstance(cfg.port, bool) or not isinstance(cfg.port, int):
        raise ConfigError(f"port: must be an integer in [0, 65535], got {cfg.port!r}")
    if not 0 <= cfg.port <= 65535:
        raise ConfigError(f"port: must be in [0, 65535], got {cfg.port}")
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
    app = app_from_config(cfg, backend)
    shown = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    print(f"vlm.serve: serving '{backend.name}' on http://{shown}:{sock.getsockname()[1]}/v1", file=sys.stdout, flush=True)
    server(app, log_level=cfg.log_level).run(sockets=[sock])


def _main() -> None:
    from common import entry

    entry.main("vlm", config_name="serve")(run_from_config)()


if __name__ == "__main__":
    _main()
