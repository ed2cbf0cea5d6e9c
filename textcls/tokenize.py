"""Char and word (jieba) tokenisation, and the text -> ids encoders the models read.

* ``char``: one token per CJK character or punctuation mark; runs of Latin letters / digits stay whole
  (``Model``, ``3``, ``SUV``), lower-cased.
* ``word``: jieba's precise mode, whitespace dropped, lower-cased.
* ``pretrained``: a Hugging Face tokenizer from a local path (the one that belongs to ``model.name_or_path``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence

from common.data.vocab import TokenVocab
from common.errors import ConfigError

_CHAR_RE = re.compile(r"[A-Za-z]+|\d+|\S")
TOKENIZERS = ("char", "word")


def char_tokens(text: str) -> list[str]:
    return [t.lower() for t in _CHAR_RE.findall(text)]


def word_tokens(text: str) -> list[str]:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return [t.lower() for t in jieba.lcut(text) if t.strip()]


def tokenize(text: str, mode: str) -> list[str]:
    if mode == "char":
        return char_tokens(text)
    if mode == "word":
        return word_tokens(text)
    raise ConfigError(f"data.tokenizer: expected one of {TOKENIZERS}, got {mode!r}")


class VocabEncoder:
    """Tokens -> ids with a :class:`TokenVocab` (``<pad>`` = 0); everything needed to rebuild it is in ``state``."""

    def __init__(self, mode: str, vocab: TokenVocab, max_len: int):
        tokenize("", mode)  # validates the mode
        self.mode, self.vocab, self.max_len = mode, vocab, max_len
        self.pad_id = 0

    @classmethod
    def fit(cls, texts: Iterable[str], mode: str, max_len: int, min_freq: int = 1, max_size: int | None = None):
        vocab = TokenVocab.build((tokenize(t, mode) for t in texts), min_freq=min_freq, max_size=max_size)
        return cls(mode, vocab, max_len)

    def tokens(self, text: str) -> list[str]:
        return tokenize(text, self.mode)

    def __call__(self, text: str) -> list[int]:
        return self.vocab.encode(self.tokens(text), self.max_len) or [1]

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        return [self(t) for t in texts]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def state(self) -> dict:
        return {"kind": "vocab", "mode": self.mode, "tokens": self.vocab.itos[2:], "max_len": self.max_len}


class HFEncoder:
    """A Hugging Face tokenizer loaded from a local directory (no hub)."""

    def __init__(self, name_or_path: str, max_len: int):
        from transformers import AutoTokenizer

        try:
            self.tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ConfigError(f"model.name_or_path: cannot load a tokenizer from {name_or_path!r} ({e})") from None
        self.name_or_path, self.max_len = name_or_path, max_len
        self.pad_id = self.tok.pad_token_id or 0
        self.mode = "pretrained"

    def __call__(self, text: str) -> list[int]:
        return self.tok(text, truncation=True, max_length=self.max_len)["input_ids"]

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tok(list(texts), truncation=True, max_length=self.max_len)["input_ids"]

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    @property
    def state(self) -> dict:
        return {"kind": "hf", "name_or_path": self.name_or_path, "max_len": self.max_len, "pad_id": self.pad_id}


def encoder_from_state(state: dict):
    if state["kind"] == "hf":
        return HFEncoder(state["name_or_path"], state["max_len"])
    return VocabEncoder(state["mode"], TokenVocab(state["tokens"]), state["max_len"])
