"""Brand names: one spelling per brand, and the brand statistics of record files.

:class:`BrandNames` folds the spellings of a brand (Unicode NFKC, case, spacing, punctuation: the key of the
brand metrics, :func:`common.metrics.brand.normalize`) and an alias map ``{canonical: [other spellings]}`` into
one name: the canonical name when an alias map names it, else the spelling seen most often (ties: the first).

``python -m vlm.brands a.jsonl [b.jsonl] --min-samples N [--out report.md] [--plot brands.png]`` reports
counts per brand, brands per file, the brands two files share and those only one has, and what a
``min_brand_samples`` threshold keeps (records: JSONL or a LLaVA ``.json`` array with a ``brand`` field).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common import io
from common.errors import DataError, UserError
from common.metrics.brand import normalize
from common.report import Table


class BrandNames:
    def __init__(self, aliases: Mapping[str, Sequence[str]] | None = None):
        self._canonical: dict[str, str] = {}
        for canon, others in (aliases or {}).items():
            for spelling in (canon, *others):
                k = normalize(spelling)
                if k in self._canonical and self._canonical[k] != canon:
                    raise DataError(f"brand aliases: {spelling!r} is listed under both {self._canonical[k]!r} and {canon!r}")
                self._canonical[k] = canon
        self._shown: dict[str, str] = {}

    @staticmethod
    def clean(raw: Any) -> str | None:
        """A table cell as a brand spelling: NFKC, spaces collapsed; None for empty / NaN / None."""
        import unicodedata

        if raw is None or (isinstance(raw, float) and raw != raw):
            return None
        text = " ".join(unicodedata.normalize("NFKC", str(raw)).split())
        return text or None

    def fit(self, raw: Iterable[Any]) -> BrandNames:
        """Learn the shown spelling of every key that no alias names: its most frequent spelling."""
        counts: dict[str, Counter] = {}
        for value in raw:
            text = self.clean(value)
            if text is not None:
                counts.setdefault(normalize(text), Counter())[text] += 1
        self._shown = {k: c.most_common(1)[0][0] for k, c in counts.items()}  # most_common keeps first-seen order on ties
        return self

    def __call__(self, raw: Any) -> str | None:
        text = self.clean(raw)
        if text is None:
            return None
        k = normalize(text)
        if not k:
            return None
        return self._canonical.get(k) or self._shown.get(k) or text


def load_brand_aliases(aliases: Mapping[str, Sequence[str]] | None, aliases_file: str | None) -> dict[str, list[str]]:
    """The ``brands.aliases`` map merged with ``brands.aliases_file`` (the file's entries first)."""
    from common.metrics.brand import load_aliases

    out: dict[str, list[str]] = dict(load_aliases(aliases_file)) if aliases_file else {}
    for k, v in (aliases or {}).items():
        out[str(k)] = [*out.get(str(k), []), *[str(a) for a in v]]
    return out


# ---------------------------------------------------------------------------------------------- statistics
def brand_counts(path: str | Path) -> tuple[Counter, int]:
    """``(records per brand, records without a brand)`` of a record file (JSONL or LLaVA JSON array)."""
    from common.data.records import read_json_records

    rows = read_json_records(path)
    counts = Counter(str(r["brand"]) for r in rows if r.get("brand") not in (None, ""))
    return counts, sum(r.get("brand") in (None, "") for r in rows)


def brand_stats(files: Mapping[str, tuple[Counter, int]], min_samples: int = 1) -> dict:
    """Per file: records, brands, what ``min_samples`` keeps; with two files: shared and file-only brands."""
    per_file = {}
    for name, (counts, unbranded) in files.items():
        kept = {b for b, n in counts.items() if n >= min_samples}
        per_file[name] = {
            "records": sum(counts.values()) + unbranded,
            "branded": sum(counts.values()),
            "unbranded": unbranded,
            "brands": len(counts),
            "kept_brands": len(kept),
            "kept_records": sum(counts[b] for b in kept) + unbranded,  # unbranded records pass the brand filter
            "dropped_records": sum(n for b, n in counts.items() if b not in kept),
        }
    out: dict[str, Any] = {"min_samples": min_samples, "files": per_file,
                           "counts": {name: dict(c.most_common()) for name, (c, _) in files.items()}}
    if len(files) == 2:
        (a, (ca, _)), (b, (cb, _)) = files.items()
        out["shared"] = sorted(set(ca) & set(cb))
        out["only"] = {a: sorted(set(ca) - set(cb)), b: sorted(set(cb) - set(ca))}
        out["shared_kept"] = sorted(x for x in out["shared"] if ca[x] >= min_samples and cb[x] >= min_samples)
    return out


def render_markdown(stats: dict, top: int | None = None) -> str:
    names = list(stats["files"])
    n = stats["min_samples"]
    files = Table(["file", "records", "with brand", "without", "brands", f"brands >= {n}", f"records kept (>= {n})", "records dropped"],
                  [[f, str(s["records"]), str(s["branded"]), str(s["unbranded"]), str(s["brands"]), str(s["kept_brands"]),
                    str(s["kept_records"]), str(s["dropped_records"])] for f, s in stats["files"].items()])
    parts = ["# Brand statistics", "", files.markdown()]
    if "shared" in stats:
        a, b = names
        parts += ["", f"Shared brands: {len(stats['shared'])}; only in {a}: {len(stats['only'][a])}; only in {b}: "
                  f"{len(stats['only'][b])}; shared with >= {n} samples in both: {len(stats['shared_kept'])}.", ""]
        for f in names:
            if stats["only"][f]:
                parts.append(f"Only in {f}: " + ", ".join(stats["only"][f]))
    totals: Counter = Counter()
    for c in stats["counts"].values():
        totals.update(c)
    brands = [b for b, _ in totals.most_common(top)]
    rows = [[b, *[str(stats["counts"][f].get(b, 0)) for f in names],
             "yes" if all(stats["counts"][f].get(b, 0) >= n for f in names if b in stats["counts"][f]) else "no"] for b in brands]
    parts += ["", "## Records per brand", "", Table(["brand", *names, f">= {n}"], rows).markdown()]
    return "\n".join(parts).rstrip() + "\n"


def plot(stats: dict, path: str | Path, top: int = 30) -> Path:
    """A horizontal bar chart of the ``top`` brands' counts per file, the threshold drawn in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    totals: Counter = Counter()
    for c in stats["counts"].values():
        totals.update(c)
    brands = [b for b, _ in totals.most_common(top)][::-1]
    names = list(stats["counts"])
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(brands) + 1.5))
    y = np.arange(len(brands))
    h = 0.8 / max(1, len(names))
    for i, f in enumerate(names):
        ax.barh(y + i * h, [stats["counts"][f].get(b, 0) for b in brands], height=h, label=Path(f).name)
    ax.axvline(stats["min_samples"], color="k", ls="--", lw=1, label=f"min_samples={stats['min_samples']}")
    ax.set_yticks(y + h * (len(names) - 1) / 2, brands)
    ax.set_xlabel("records")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    with io.atomic_open(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm.brands", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="one or two record files (JSONL or LLaVA .json)")
    p.add_argument("--min-samples", type=int, default=1, help="the min_brand_samples threshold to report on")
    p.add_argument("--out", help="write the Markdown here (default: print it)")
    p.add_argument("--plot", help="also write a bar chart (PNG) here")
    p.add_argument("--top", type=int, default=None, help="list only the N most frequent brands")
    args = p.parse_args(argv)
    try:
        if len(args.files) > 2:
            raise UserError(f"files: give one or two record files, got {len(args.files)}")
        if args.min_samples < 1:
            raise UserError(f"--min-samples: expected >= 1, got {args.min_samples}")
        stats = brand_stats({f: brand_counts(f) for f in args.files}, args.min_samples)
        text = render_markdown(stats, args.top)
        if args.out:
            io.write_text(args.out, text)
        else:
            sys.stdout.write(text)
        if args.plot:
            plot(stats, args.plot)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
