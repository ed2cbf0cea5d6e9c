"""A short stable hash of the records a run actually used, logged to MLflow as ``data_fingerprint``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any


def fingerprint(records: Iterable[Any]) -> str:
    """sha256 over the canonical JSON of each record, in order; 16 hex chars."""
    h = hashlib.sha256()
    for rec in records:
        h.update(json.dumps(rec, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]
