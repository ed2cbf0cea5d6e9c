"""Images into a content-addressed cache: ``<cache>/<sha256[:2]>/<sha256>.<ext>``, named by the bytes' sha256.

A source is an http(s) URL (``requests`` with connect/read timeouts, urllib3 retries with backoff on
connection errors, timeouts and 408/429/5xx, at most ``per_host`` requests to one host at once, a size cap),
a ``file://`` URL or a path. Every image is decoded with PIL before it enters the cache; what fails is a
:class:`Rejected` with a short reason (``missing``, ``http_404``, ``unreachable``, ``not_an_image``, ...),
never an exception out of :meth:`Fetcher.fetch`. A file enters the cache through a temporary file and
``os.replace``, so a killed run leaves no torn image under its final name (:meth:`ImageCache.sweep` removes
the temporary files such a run leaves behind).
"""

from __future__ import annotations

import hashlib
import io as _io
import re
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from common import io

EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class Fetched:
    sha256: str
    path: Path
    width: int
    height: int
    bytes: int


class ImageCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha: str, ext: str) -> Path:
        return self.root / sha[:2] / f"{sha}{ext}"

    def put(self, data: bytes, ext: str) -> tuple[str, Path]:
        sha = hashlib.sha256(data).hexdigest()
        path = self.path_for(sha, ext)
        if not path.is_file() or path.stat().st_size != len(data):
            io.write_bytes(path, data)  # temp file beside it + os.replace
        return sha, path

    def sweep(self) -> int:
        """Remove the temporary files a killed run left (call it holding the run's lock)."""
        n = 0
        for tmp in self.root.glob("*/.*.tmp"):
            tmp.unlink(missing_ok=True)
            n += 1
        return n


def verify(data: bytes, max_pixels: int | None = None) -> tuple[str, int, int]:
    """``(extension, width, height)`` of bytes that PIL decodes completely; :class:`Rejected` otherwise."""
    if not data:
        raise Rejected("not_an_image", "empty file")
    try:
        with Image.open(_io.BytesIO(data)) as im:
            if max_pixels and im.width * im.height > max_pixels:
                raise Rejected("too_large", f"{im.width}x{im.height} pixels")
            im.load()
            return EXT.get(im.format or "", ".img"), im.width, im.height
    except Rejected:
        raise
    except Exception as e:  # PIL raises many kinds for many broken files: all mean "not an image we can use"
        first = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(e).splitlines()[0] if str(e) else "")
        raise Rejected("not_an_image", f"{type(e).__name__}: {first}".rstrip(": ")) from None


class Fetcher:
    def __init__(self, cache: ImageCache, base_dir: str | Path, cfg):
        self.cache, self.base_dir, self.cfg = cache, Path(base_dir), cfg
        self._local = threading.local()
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._hosts_lock = threading.Lock()

    # -------------------------------------------------------------------------------- http(s)
    def _session(self):
        s = getattr(self._local, "session", None)
        if s is None:
            import requests
            from requests.adapters import HTTPAdapter
            from urllib3.util import Retry

            retry = Retry(total=self.cfg.retries, connect=self.cfg.retries, read=self.cfg.retries, status=self.cfg.retries,
                          backoff_factor=self.cfg.backoff_s, status_forcelist=(408, 429, 500, 502, 503, 504),
                          allowed_methods=("GET",), raise_on_status=False, respect_retry_after_header=True)
            s = requests.Session()
            s.headers["User-Agent"] = self.cfg.user_agent
            adapter = HTTPAdapter(max_retries=retry, pool_maxsize=max(1, self.cfg.per_host))
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            self._local.session = s
        return s

    def _host_slot(self, host: str) -> threading.BoundedSemaphore:
        with self._hosts_lock:
            if host not in self._hosts:
                self._hosts[host] = threading.BoundedSemaphore(max(1, self.cfg.per_host))
            return self._hosts[host]

    def _get_http(self, url: str) -> bytes:
        import requests

        host = urllib.parse.urlsplit(url).netloc.lower()
        with self._host_slot(host):
            try:
                with self._session().get(url, timeout=(self.cfg.timeout_s, self.cfg.timeout_s), stream=True) as r:
                    if r.status_code >= 400:
                        raise Rejected(f"http_{r.status_code}", url)
                    chunks, size = [], 0
                    for chunk in r.iter_content(64 * 1024):
                        size += len(chunk)
                        if size > self.cfg.max_bytes:
                            raise Rejected("too_large", f"more than {self.cfg.max_bytes} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except requests.exceptions.Timeout:
                raise Rejected("timeout", url) from None
            except requests.exceptions.RetryError as e:  # retried statuses to the end
                raise Rejected("http_retries_exhausted", str(e.args[0].reason if e.args and hasattr(e.args[0], "reason") else e)[:200]) from None
            except requests.exceptions.RequestException as e:
                import urllib3

                cause = getattr(e.args[0], "reason", None) if e.args else None  # urllib3's MaxRetryError says why
                # (urllib3's NewConnectionError, a refused connection, subclasses its ConnectTimeoutError)
                if isinstance(cause, urllib3.exceptions.TimeoutError) and not isinstance(cause, urllib3.exceptions.NewConnectionError):
                    raise Rejected("timeout", url) from None
                raise Rejected("unreachable", f"{url} ({type(cause or e).__name__})") from None

    # ---------------------------------------------------------------------------------- local
    def local_path(self, source: str) -> Path | None:
        """The file a ``file://`` URL or path names (relative to the table's folder); None for http(s)."""
        scheme = urllib.parse.urlsplit(source).scheme.lower()
        if scheme in ("http", "https"):
            return None
        if scheme == "file":
            return Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path))
        if scheme and len(scheme) > 1:  # c:\ is a drive, not a scheme
            raise Rejected("unsupported_url", f"scheme {scheme}:// (http, https, file or a path)")
        p = Path(source).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def _get_local(self, path: Path) -> bytes:
        if not path.is_file():
            raise Rejected("missing", str(path))
        if path.stat().st_size > self.cfg.max_bytes:
            raise Rejected("too_large", f"more than {self.cfg.max_bytes} bytes")
        try:
            return path.read_bytes()
        except OSError as e:
            raise Rejected("unreadable", f"{path}: {e.strerror or e}") from None

    def fetch(self, source: str) -> Fetched:
        """The source's image, verified and in the cache; :class:`Rejected` with the reason otherwise."""
        local = self.local_path(source)
        data = self._get_local(local) if local is not None else self._get_http(source)
        ext, w, h = verify(data)
        sha, path = self.cache.put(data, ext)
        return Fetched(sha, path, w, h, len(data))
