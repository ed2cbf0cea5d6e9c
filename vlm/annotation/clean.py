"""Answer cleaning for teacher annotations: the vlm cleaning step (:func:`vlm.captions.clean_caption`) plus
a record of what it did, so the report can count how often the teacher looped, rambled or wrote garbage.

Flags: ``garbage`` and ``loop`` (the answer was dropped for that reason), ``too_short`` (dropped: fewer than
``min_chars`` left), ``truncated`` (longer than the limit, cut at the last full stop before it, or at the last
word boundary when there is none), ``fragment``
(text after the last full stop cut off), ``empty`` (nothing usable remained).
"""

from __future__ import annotations

from dataclasses import dataclass

from vlm.captions import _garbage_ratio, clean_caption, has_loop

STOPS = ".!?。！？"


@dataclass(frozen=True)
class CleanSettings:
    max_chars: int = 400
    min_chars: int = 2
    max_repeat_ngram: int = 3
    cut_at_last_stop: bool = True
    max_garbage_ratio: float = 0.3


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
        if out[-1] not in STOPS and flat.startswith(out) and len(out) < len(flat) and not flat[len(out)].isspace() and " " in out:
            out = out.rsplit(" ", 1)[0].rstrip(" ,;:-")
    elif out != flat:
        flags.append("fragment")
    return out, flags
