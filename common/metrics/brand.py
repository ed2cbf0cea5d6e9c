"""Does a caption name a brand? And the five brand recalls the team tracks per run (DESIGN.md §6).

Matching is on a normalised form: Unicode NFKC, case-folded, punctuation dropped, whitespace collapsed.
A brand (or any of its aliases) is named when its normalised words appear as consecutive words of the
caption, or when its letters without spaces equal a run of consecutive caption words without spaces
("coca cola" ~ "Coca-Cola" ~ "CocaCola"). Aliases written in CJK script match as substrings, since
Chinese has no spaces. A word never matches inside a longer word ("hp" is not in "champion").

Sample kinds:
* ``logo``: a branded product whose logo is visible (gold brand set);
* ``none``: no brand at all (gold brand null);
* ``none_brand``: a brand's product without a visible logo (gold brand set, cues only).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.errors import DataError

_PUNCT = re.compile(r"[^\w\s]|_", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")

RECALL_NAMES = ("logo_recall", "brand_recall", "none_recall", "none_brand_recall", "none_brand_label_recall")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCT.sub(" ", text).split())


def load_aliases(path: str | Path) -> dict[str, list[str]]:
    """``{brand: [alias, ...]}`` from a JSON or YAML file; a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: brand alias file not found")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: cannot parse brand aliases (invalid JSON: {e.msg} at column {e.colno})") from None
    except Exception as e:  # YAML errors carry their position in problem_mark (0-based)
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise DataError(f"{where}: cannot parse brand aliases ({type(e).__name__})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(a, str) for a in v) for v in data.values()):
        raise DataError(f"{path}: expected a mapping brand -> list of alias strings")
    return {str(k): list(v) for k, v in data.items()}


class BrandMatcher:
    def __init__(self, brands: Iterable[str], aliases: Mapping[str, Sequence[str]] | None = None):
        aliases = aliases or {}
        unknown = set(aliases) - set(brands)
        if unknown:
            raise DataError(f"aliases given for unknown brand(s): {', '.join(sorted(unknown))}")
        self.forms: dict[str, list[str]] = {}
        for brand in brands:
            forms = {normalize(brand), *(normalize(a) for a in aliases.get(brand, ()))}
            self.forms[brand] = sorted(f for f in forms if f)

    @staticmethod
    def _contains(words: list[str], form: str) -> bool:
        if _CJK.search(form):
            return form.replace(" ", "") in "".join(words)
        target = form.split()
        n = len(target)
        if any(words[i : i + n] == target for i in range(len(words) - n + 1)):
            return True
        squashed = "".join(target)
        for i in range(len(words)):
            acc = ""
            for j in range(i, min(len(words), i + 4)):
                acc += words[j]
                if acc == squashed:
                    return True
                if len(acc) >= len(squashed):
                    break
        return False

    def names(self, caption: str) -> set[str]:
        """The brands a caption names."""
        words = normalize(caption).split()
        return {b for b, forms in self.forms.items() if any(self._contains(words, f) for f in forms)}


@dataclass(frozen=True)
class Sample:
    kind: str  # "logo" | "none" | "none_brand"
    brand: str | None
    caption: str


def brand_recalls(samples: Iterable[Sample], matcher: BrandMatcher) -> dict[str, float]:
    """The five recalls; a recall with no sample of its kind is NaN (not 0, which would read as a failure).

    * logo_recall: logo images whose caption names the gold brand;
    * brand_recall: the same, macro-averaged over brands;
    * none_recall: no-brand images whose caption names no brand;
    * none_brand_recall: logo-less branded products whose caption names some brand;
    * none_brand_label_recall: ... whose caption names the gold brand.
    """
    logo_hits: dict[str, list[bool]] = {}
    none_hits, nb_any, nb_label = [], [], []
    for s in samples:
        named = matcher.names(s.caption)
        if s.kind == "logo":
            logo_hits.setdefault(str(s.brand), []).append(s.brand in named)
        elif s.kind == "none":
            none_hits.append(not named)
        elif s.kind == "none_brand":
            nb_any.append(bool(named))
            nb_label.append(s.brand in named)
        else:
            raise DataError(f"unknown sample kind {s.kind!r} (expected logo, none or none_brand)")

    def mean(xs: Sequence[float]) -> float:
        return float(sum(xs) / len(xs)) if xs else float("nan")

    all_logo = [h for hits in logo_hits.values() for h in hits]
    return {
        "logo_recall": mean(all_logo),
        "brand_recall": mean([mean(h) for h in logo_hits.values()]),
        "none_recall": mean(none_hits),
        "none_brand_recall": mean(nb_any),
        "none_brand_label_recall": mean(nb_label),
    }
