"""Caption cleaning, one step for training captions and teacher answers alike.

``clean_caption(text, ...)`` returns the cleaned text, or ``None`` when the text should be dropped:
* garbled: too large a share of characters that are neither letters/digits/CJK, spaces nor punctuation;
* looping: an n-gram (1..4 words) repeated more than ``max_repeat_ngram`` times in a row;
* a truncated text is cut after its last full stop (``.``, ``!``, ``?``, ``。``, ``！``, ``？``);
* length limits: at most ``max_chars`` (cut at the last full stop before it) and at least ``min_chars``.

``clean_with(cfg)`` configures it from a ``data.clean`` node (training data). :func:`clean` is the same step
for teacher annotations (``python -m vlm.annotate``) plus a record of what it did, so the report can count how
often the teacher looped, rambled or wrote garbage. Flags: ``garbage`` and ``loop`` (the answer was dropped
for that reason), ``too_short`` (dropped: fewer than ``min_chars`` left), ``truncated`` (longer than the
limit, cut at the last full stop before it, or at the last word boundary when there is none), ``fragment``
(text after the last full stop cut off), ``empty`` (nothing usable remained).
"""

from __future__ import annotations

import re
import unicodedata

from vlm.schemas import CaptionCleanSchema

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
    max_chars: int = CaptionCleanSchema.max_chars,
    min_chars: int = CaptionCleanSchema.min_chars,
    max_repeat_ngram: int = CaptionCleanSchema.max_repeat_ngram,
    cut_at_last_stop_: bool = CaptionCleanSchema.cut_at_last_stop,
    max_garbage_ratio: float = CaptionCleanSchema.max_garbage_ratio,
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


CleanSettings = CaptionCleanSchema  # the limits, said once (vlm.schemas); data.clean and annotate's clean use it


def clean(text: str | None, settings: CleanSettings = CleanSettings(), max_chars: int | None = None) -> tuple[str, list[str]]:
    """``(cleaned text or "", flags)``; ``max_chars`` (a mode's limit) overrides ``settings.max_chars``."""
    limit = int(max_chars or settings.max_chars)
    flat = " ".join(str(text or "").split())
    if not flat:
        return "", ["empty"]
    out = clean_caption(flat, limit, settings.min_chars, settings.max_repeat_ngram, settings.cut_at_last_stop, settings.max_garbage_ratio)
    if out is None:
        if _garbage_ratio(flat) > settings.max_garbage_ratio:
            reason = "garbage"
        elif has_loop(flat, settings.max_repeat_ngram):
            reason = "loop"
        else:
            reason = "too_short"
        return "", [reason, "empty"]
    flags = []
    if len(flat) > limit:
        flags.append("truncated")
        # No full stop within the limit: the cut fell wherever it fell; do not leave half a word behind.
        if out[-1] not in _STOPS and flat.startswith(out) and len(out) < len(flat) and not flat[len(out)].isspace() and " " in out:
            out = out.rsplit(" ", 1)[0].rstrip(" ,;:-")
    elif out != flat:
        flags.append("fragment")
    return out, flags


# ------------------------------------------------------------------------------------- limits in tokens
_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W\u3400-\u9fff\uf900-\ufaff]+|[^\w\s]", re.UNICODE)


class Tokens:
    """Counts and cuts text in tokens, for limits said in the teacher's ``max_tokens`` rather than characters.

    ``words`` (the default; it ships everywhere): a word, a CJK character or a punctuation mark is one token
    (close to a BPE tokenizer's count for English, exact for Chinese characters); any other value is the
    folder of a Hugging Face tokenizer (the teacher's own, e.g. Qwen2-VL's), counted with its offsets.
    """

    def __init__(self, spec: str = "words"):
        self.spec = spec
        self._tok = None
        if spec != "words":
            from transformers import AutoTokenizer

            try:
                self._tok = AutoTokenizer.from_pretrained(spec)
            except (OSError, ValueError) as e:
                from common.errors import ConfigError

                raise ConfigError(f"captions.tokenizer: {spec!r} is neither 'words' nor a tokenizer folder ({type(e).__name__})") from None

    def spans(self, text: str) -> list[tuple[int, int]]:
        if self._tok is None:
            return [m.span() for m in _TOKEN.finditer(text)]
        enc = self._tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(o) for o in enc["offset_mapping"]]

    def count(self, text: str) -> int:
        return len(self.spans(text))

    def cut(self, text: str, n: int) -> str:
        """The text of the first ``n`` tokens."""
        spans = self.spans(text)
        return text if len(spans) <= n else text[: spans[n - 1][1]]


def clean_tokens(text: str | None, settings: CleanSettings, max_tokens: int, tokens: Tokens) -> tuple[str, list[str]]:
    """:func:`clean` with the length limit in tokens (no character limit): drops loops and garbage, cuts a
    fragment after the last full stop, and an answer longer than ``max_tokens`` tokens at the last full stop
    within them (flag ``truncated``)."""
    flat = " ".join(str(text or "").split())
    out, flags = clean(flat, settings, max_chars=len(flat) + 1)
    if not out or tokens.count(out) <= max_tokens:
        return out, flags
    cut = tokens.cut(out, max_tokens)
    cut = (cut_at_last_stop(cut) if settings.cut_at_last_stop else cut).strip()
    if len(cut) < settings.min_chars:
        return "", ["too_short", "empty"]
    return cut, [*flags, "truncated"]
