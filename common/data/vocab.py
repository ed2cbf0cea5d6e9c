"""Label vocabularies (names <-> indices, multi-hot) and token vocabularies with a minimum frequency."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from common.errors import DataError
from common.io import write_json


class LabelVocab:
    """An ordered set of label names. Unknown labels are an error, never a silent new class."""

    def __init__(self, labels: Iterable[str]):
        self.labels: list[str] = list(dict.fromkeys(labels))
        self.index = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def from_records(cls, label_lists: Iterable[Iterable[str]]) -> LabelVocab:
        """Labels sorted by descending frequency, then name (stable across runs)."""
        counts = Counter(label for labels in label_lists for label in labels)
        return cls(sorted(counts, key=lambda label: (-counts[label], label)))

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: str) -> bool:
        return label in self.index

    def encode(self, label: str) -> int:
        try:
            return self.index[label]
        except KeyError:
            raise DataError(f"unknown label {label!r}; known: {', '.join(self.labels[:20])}") from None

    def multi_hot(self, labels: Iterable[str]) -> np.ndarray:
        out = np.zeros(len(self.labels), dtype=np.float32)
        for label in labels:
            out[self.encode(label)] = 1.0
        return out

    def decode(self, row: Sequence[float] | np.ndarray, threshold: float = 0.5) -> list[str]:
        return [self.labels[i] for i, v in enumerate(row) if v >= threshold]

    def save(self, path: str | Path) -> None:
        write_json(path, self.labels)

    @classmethod
    def load(cls, path: str | Path) -> LabelVocab:
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))


class TokenVocab:
    """Token -> id with ``<pad>`` = 0 and ``<unk>`` = 1; tokens below ``min_freq`` map to ``<unk>``."""

    PAD, UNK = "<pad>", "<unk>"

    def __init__(self, tokens: Iterable[str]):
        self.itos = [self.PAD, self.UNK, *[t for t in tokens if t not in (self.PAD, self.UNK)]]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, docs: Iterable[Iterable[str]], min_freq: int = 1, max_size: int | None = None) -> TokenVocab:
        counts = Counter(t for doc in docs for t in doc)
        tokens = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls(tokens[:max_size] if max_size else tokens)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str], max_len: int | None = None) -> list[int]:
        ids = [self.stoi.get(t, 1) for t in tokens]
        return ids[:max_len] if max_len else ids

    def save(self, path: str | Path) -> None:
        write_json(path, self.itos[2:])

    @classmethod
    def load(cls, path: str | Path) -> TokenVocab:
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))
