"""The resumable cache: one JSONL line appended (and flushed to disk) per finished request.

A re-run reads it back and skips every item whose latest line for the same request key is ``ok``. A run
killed mid-write leaves at most one torn last line, which the next run cuts off before appending, so nothing
finished is lost and nothing is counted twice. A lock file keeps two runs from writing the same cache.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import IO

from common.errors import UserError

log = logging.getLogger(__name__)


class ResultCache:
    def __init__(self, path: str | Path, dir_key: str = "out_dir"):
        self.path = Path(path)
        self.dir_key = dir_key  # the config key that moves the cache, for the message when it is locked
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock: IO | None = None
        self._fh: IO | None = None
        self.rows: dict[str, dict] = {}  # key -> latest row

    def __enter__(self) -> ResultCache:
        self._lock = open(self.path.with_name(self.path.name + ".lock"), "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise UserError(f"{self.path}: another run is writing this cache; wait for it or use another {self.dir_key}") from None
        self._load()
        self._fh = open(self.path, "a", encoding="utf-8")
        return self

    def __exit__(self, *exc) -> None:
        if self._fh:
            self._fh.close()
        if self._lock:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good = data.rfind(b"\n") + 1  # bytes after the last newline are a torn write
        if good < len(data):
            log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run", self.path, len(data) - good)
            with open(self.path, "r+b") as f:
                f.truncate(good)
        for lineno, line in enumerate(data[:good].decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                self.rows[row["key"]] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s:%d: unreadable cache line skipped", self.path, lineno)

    def done(self, key: str) -> bool:
        row = self.rows.get(key)
        return bool(row and row.get("status") == "ok")

    def append(self, row: dict) -> None:
        assert self._fh is not None, "use the cache as a context manager"
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows[row["key"]] = row


def read_rows(path: str | Path) -> list[dict]:
    """Every complete line of a cache file, in order (for tests and audits)."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
