"""Caption cleaning, a reusable step for training data and teacher answers alike.

``clean_caption(text, ...)`` returns the cleaned text, or ``None`` when the text should be dropped:
* garbled: too large a share of characters that are neither letters/digits/CJK, spaces nor punctuation;
* looping: an n-gram (1..4 words) repeated more than ``max_repeat_ngram`` times in a row;
* a truncated text is cut after its last full stop (``.``, ``!``, ``?``, ``。``, ``！``, ``？``);
* length limits: at most ``max_chars`` (cut at the last full stop before it) and at least ``min_chars``.
"""

from __future__ import annotations

import re
import unicodedata

_STOPS = ".!?。！？"


def _garbage_ratio(text: str) -> float:
    bad = 0
    for ch in text:
        cat = unicodedata.category(ch)
        if ch.isspace() or cat[0] in "LNP" or cat in ("Sm", "Sc"):
            continue
        bad += 1
    return bad / max(1, len(text))


def has_loop(text: str, max_repeat: int) -> bool:
    words = text.split()
    for n in range(1, 5):
        for i in range(len(words) - n * (max_repeat + 1) + 1):
            gram = words[i : i + n]
            if all(words[i + k * n : i + (k + 1) * n] == gram for k in range(1, max_repeat + 1)):
                return True
    # character-level loops without spaces (e.g. CJK "好的好的好的好的")
    return bool(re.search(r"(.{1,6}?)\1{" + str(max_repeat) + ",}", text.replace(" ", "")))


def cut_at_last_stop(text: str) -> str:
    idx = max(text.rfind(s) for s in _STOPS)
    return text[: idx + 1] if idx >= 0 else text


def clean_caption(
    text: str,
    max_chars: int = 400,
    min_chars: int = 2,
    max_repeat_ngram: int = 3,
    cut_at_last_stop_: bool = True,
    max_garbage_ratio: float = 0.3,
) -> str | None:
    text = " ".join(str(text).split())
    if not text or _garbage_ratio(text) > max_garbage_ratio:
        return None
    if has_loop(text, max_repeat_ngram):
        return None
    if len(text) > max_chars:
        text = cut_at_last_stop(text[:max_chars]) if cut_at_last_stop_ else text[:max_chars]
    elif cut_at_last_stop_ and text[-1] not in _STOPS:
        cut = cut_at_last_stop(text)
        text = cut if len(cut) >= min_chars else text
    text = text.strip()
    return text if len(text) >= min_chars else None


def clean_with(cfg) -> callable:
    """``clean(text)`` configured from a ``data.clean`` node (identity-with-strip when disabled)."""
    if not cfg.enabled:
        return lambda t: " ".join(str(t).split()) or None
    return lambda t: clean_caption(
        t, cfg.max_chars, cfg.min_chars, cfg.max_repeat_ngram, cfg.cut_at_last_stop, cfg.max_garbage_ratio
    )
