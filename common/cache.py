"""Build once, cache by a content hash: the one "key -> build into a temporary path -> rename into place" step.

A cached artefact (a file, or a folder) lives at a path named by a hash of everything it was made from
(:func:`content_hash`). :func:`build_once` returns it when it is complete; otherwise it builds it into a
temporary sibling (``.<name>.<pid>.tmp``) and renames that into place, so a reader (another process, the
next run after a crash) sees the whole artefact or none of it. A folder counts as complete only with its
``DONE`` marker, which :func:`build_once` writes last, just before the rename.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DONE = "DONE"


def content_hash(obj: Any, length: int = 12) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``obj``: bytes and str as they are, anything else
    as its JSON with sorted keys (so equal configs give equal keys)."""
    if isinstance(obj, str):
        obj = obj.encode()
    elif not isinstance(obj, bytes | bytearray):
        obj = json.dumps(obj, sort_keys=True).encode()
    return hashlib.sha256(obj).hexdigest()[:length]


def is_complete(path: str | os.PathLike) -> bool:
    """A cached file exists, or a cached folder has its ``DONE`` marker."""
    path = Path(path)
    return path.is_file() or (path / DONE).is_file()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def build_once(path: str | os.PathLike, build: Callable[[Path], Any], what: str = "") -> Path:
    """``path`` when it is already complete; else ``build(tmp)`` writes the artefact (a file or a folder) at
    ``tmp`` and it is renamed to ``path``. On an error the temporary path is removed and the error raised.

    When a concurrent builder finished first, its artefact is kept and this one discarded."""
    path = Path(path)
    if is_complete(path):
        log.debug("%s from cache %s", what or "artefact", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _remove(tmp)
    if what:
        log.info("building %s into %s", what, path)
    try:
        build(tmp)
        if tmp.is_dir():
            (tmp / DONE).write_text("ok\n")
        elif not tmp.exists():
            raise FileNotFoundError(f"the build of {path} wrote nothing at {tmp}")
        if is_complete(path):  # another process got there first
            _remove(tmp)
            return path
        if path.exists():  # an incomplete folder of an interrupted build
            _remove(path)
        try:
            os.replace(tmp, path)
        except OSError:
            if not is_complete(path):  # a folder cannot replace a non-empty one: fine if that one is whole
                raise
            _remove(tmp)
    except BaseException:
        _remove(tmp)
        raise
    return path
