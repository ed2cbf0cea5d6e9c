"""Pretrained word/char vectors in word2vec text format (``count dim`` header, then ``token v1 .. vdim``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from common.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def read_word2vec(path: str | Path, wanted: set[str] | None = None) -> tuple[dict[str, np.ndarray], int]:
    """``({token: vector}, dim)``; only tokens in ``wanted`` are kept when given. Bad lines: ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such vectors file")
    vectors: dict[str, np.ndarray] = {}
    dim = None
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                dim = int(parts[1])
                continue
            if len(parts) < 2:
                continue
            if dim is None:
                dim = len(parts) - 1
            if len(parts) - 1 != dim:
                raise DataError(f"{path}:{lineno}: expected {dim} values, got {len(parts) - 1}")
            if wanted is not None and parts[0] not in wanted:
                continue
            try:
                vectors[parts[0]] = np.asarray(parts[1:], dtype=np.float32)
            except ValueError:
                raise DataError(f"{path}:{lineno}: non-numeric vector value") from None
    if dim is None:
        raise DataError(f"{path}: no vectors")
    return vectors, dim


def embedding_matrix(path: str | Path, itos: list[str], dim: int, seed: int = 0) -> torch.Tensor:
    """Rows for the vocabulary: pretrained where known, small uniform noise elsewhere, zeros for ``<pad>``."""
    vectors, file_dim = read_word2vec(path, set(itos))
    if file_dim != dim:
        raise ConfigError(f"model.embedding_dim: {dim}, but {path} has {file_dim}-dimensional vectors")
    rng = np.random.default_rng(seed)
    out = rng.uniform(-0.25, 0.25, size=(len(itos), dim)).astype(np.float32)
    out[0] = 0.0
    hits = 0
    for i, tok in enumerate(itos):
        if tok in vectors:
            out[i] = vectors[tok]
            hits += 1
    log.info("vectors %s cover %d of %d vocabulary tokens", path, hits, len(itos))
    return torch.from_numpy(out)
