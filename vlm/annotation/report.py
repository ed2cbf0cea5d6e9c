"""The error-analysis report: Markdown (images linked) and self-contained HTML (images embedded)."""

from __future__ import annotations

import base64
import html
import io as _io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from .analysis import Analysis
from .prompts import Mode


def pct(stats: dict | None) -> str:
    """``0.750 (3/4)``: the rate with its counts, so every number can be checked against the JSONL."""
    if not stats or not stats.get("answered"):
        return "n/a (0/0)"
    return f"{stats['agreement']:.3f} ({stats['agree']}/{stats['answered']})"


def _chars(stats: dict) -> str:
    return "n/a" if stats.get("mean_chars") is None else f"{stats['mean_chars']:.1f}"


def _delta(a: dict, b: dict) -> str:
    if a.get("agreement") is None or b.get("agreement") is None:
        return "n/a"
    return f"{b['agreement'] - a['agreement']:+.3f}"


def _thumb(path: str, size: int = 128) -> str:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            if im.width < size // 2:  # tiny synthetic images: scale up so they can be seen
                im = im.resize((im.width * 2, im.height * 2), Image.NEAREST)
            buf = _io.BytesIO()
            im.save(buf, format="PNG")
    except OSError:
        return ""
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _per_class_table(a: Analysis, modes: Sequence[Mode], compare: Sequence[str] | None) -> tuple[list[str], list[list[str]]]:
    names = [m.name for m in modes]
    cols = ["class", "n"] + [f"agree {m}" for m in names]
    cmp_ok = bool(compare) and len(compare) == 2 and all(c in names for c in compare)
    if cmp_ok:
        x, y = compare
        cols += [f"Δ {y}−{x}", f"chars {x}", f"chars {y}"]
    cols += ["failed", "empty", "suspected", "free answers name instead", "reading"]
    suspected = {}
    for s in a.suspects:
        suspected[s["label"]] = suspected.get(s["label"], 0) + 1
    rows = []
    for cls, per_mode in [*a.per_class.items(), ("**all**", a.overall)]:
        first = per_mode[names[0]]
        row = [cls, str(first["n"])] + [pct(per_mode[m]) for m in names]
        if cmp_ok:
            row += [_delta(per_mode[x], per_mode[y]), _chars(per_mode[x]), _chars(per_mode[y])]
        row += [
            str(sum(per_mode[m]["failed"] for m in names)),
            str(sum(per_mode[m]["empty"] for m in names)),
            str(len(a.suspects) if cls == "**all**" else suspected.get(cls, 0)),
            "" if cls == "**all**" else ", ".join(f"{k} ({v})" for k, v in a.confusions.get(cls, {}).items()),
            "" if cls == "**all**" else a.diagnosis.get(cls, ""),
        ]
        rows.append(row)
    return cols, rows


def _md_table(cols: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return "| " + " | ".join(cols) + " |\n|" + "|".join("---" for _ in cols) + "|\n" + "".join("| " + " | ".join(esc(c) for c in r) + " |\n" for r in rows)


def _definitions(a: Analysis, modes: Sequence[Mode]) -> list[str]:
    return [
        "An answer **agrees** when it names the gold class (brand-metric matching: case, spacing, punctuation, aliases); "
        "for the none class, when it names no class. Agreement = agreeing / answered (ok and non-empty after cleaning); "
        "failed requests and emptied answers are counted apart.",
        "Modes: " + "; ".join(f"`{m.name}` = {m.title}" + (f" (≤ {m.max_chars} chars)" if m.max_chars else "") for m in modes) + ".",
    ]


def render_markdown(a: Analysis, modes: Sequence[Mode], meta: dict, compare: Sequence[str] | None) -> str:
    out = [f"# Teacher annotation: {meta.get('name', '')}", ""]
    out += [f"- teacher: `{meta['model']}` at `{meta['base_url']}`", f"- items: {meta['items']} · generation: {meta['generation']}", ""]
    out += [*(f"{line}" for line in _definitions(a, modes)), ""]
    out += ["## Per-class agreement", "", _md_table(*_per_class_table(a, modes, compare))]
    le = a.length_effect
    if le:
        x, y = le["from"], le["to"]
        out += ["## Length-limit effect", ""]
        out += [
            f"- agreement: {x} {_fmt(le['agreement'][x])} → {y} {_fmt(le['agreement'][y])}",
            f"- mean answer length: {x} {_fmt(le['mean_chars'][x], 1)} → {y} {_fmt(le['mean_chars'][y], 1)} chars; answers cut to the limit in {y}: {le['truncated'][y]}",
            f"- agreed in {x} but not in {y}: {len(le['lost'])} ({', '.join(le['lost'][:10]) or '-'}); the reverse: {len(le['gained'])} ({', '.join(le['gained'][:10]) or '-'})",
            "",
        ]
    out += ["## Disagreements (examples per class)", ""]
    for cls, examples in a.disagreements.items():
        if not examples:
            continue
        out += [f"### {cls}", ""]
        for ex in examples:
            out.append(f"- ![{ex['id']}]({Path(ex['image']).as_uri()}) `{ex['id']}` (gold {ex['label']})")
            for m, r in ex["modes"].items():
                out.append(f"  - {m}: {_verdict(r)} — “{r['answer'] or ''}”")
        out.append("")
    out += ["## Suspected label errors", ""]
    if a.suspects:
        out.append(_md_table(["id", "label", "suggested", "votes", "modes"], [[s["id"], s["label"], s["suggested"], str(s["votes"]), ", ".join(s["modes"])] for s in a.suspects]))
    else:
        out += ["none", ""]
    c = a.train_counts
    out += ["## Corrected training set", "", f"kept {c['kept']}; dropped: {c['dropped_suspect']} suspected label errors, {c['dropped_disagree']} disagreeing, {c['dropped_empty']} empty, {c['dropped_failed']} failed.", ""]
    return "\n".join(out)


def _verdict(r: dict) -> str:
    if r.get("status") != "ok":
        return f"failed ({r.get('error')})"
    if not r.get("answer"):
        return "empty after cleaning"
    named = ", ".join(r.get("named") or []) or "no class"
    return f"{'agrees' if r.get('agree') else 'disagrees'}, names {named}"


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def render_html(a: Analysis, modes: Sequence[Mode], meta: dict, compare: Sequence[str] | None) -> str:
    e = html.escape
    cols, rows = _per_class_table(a, modes, compare)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Teacher annotation: {e(str(meta.get('name', '')))}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f4f4f4}"
        ".ex{display:flex;gap:12px;align-items:flex-start;margin:8px 0}.ex img{image-rendering:pixelated;border:1px solid #ccc}"
        ".bad{color:#a00}.muted{color:#666}</style></head><body>",
        f"<h1>Teacher annotation: {e(str(meta.get('name', '')))}</h1>",
        f"<p>teacher <code>{e(meta['model'])}</code> at <code>{e(meta['base_url'])}</code> · {meta['items']} items · generation {e(str(meta['generation']))}</p>",
        *(f"<p class='muted'>{e(line).replace('**', '').replace('`', '')}</p>" for line in _definitions(a, modes)),
        "<h2>Per-class agreement</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>",
        *("<tr>" + "".join(f"<td>{e(c.replace('**', ''))}</td>" for c in r) + "</tr>" for r in rows),
        "</table>",
    ]
    le = a.length_effect
    if le:
        x, y = le["from"], le["to"]
        parts += [
            "<h2>Length-limit effect</h2><ul>",
            f"<li>agreement: {x} {_fmt(le['agreement'][x])} → {y} {_fmt(le['agreement'][y])}</li>",
            f"<li>mean answer length: {x} {_fmt(le['mean_chars'][x], 1)} → {y} {_fmt(le['mean_chars'][y], 1)} chars; cut to the limit in {y}: {le['truncated'][y]}</li>",
            f"<li>agreed in {x} but not in {y}: {len(le['lost'])}; the reverse: {len(le['gained'])}</li></ul>",
        ]
    parts.append("<h2>Disagreements (examples per class)</h2>")
    for cls, examples in a.disagreements.items():
        if not examples:
            continue
        parts.append(f"<h3>{e(cls)}</h3>")
        for ex in examples:
            lines = "".join(
                f"<br><i>{e(m)}</i>: <span class='{'bad' if r.get('agree') is False else 'muted'}'>{e(_verdict(r))}</span> — {e(r['answer'] or '')}"
                for m, r in ex["modes"].items()
            )
            parts.append(f"<div class='ex'><img src='{_thumb(ex['image'])}' alt='{e(ex['id'])}'><div><b>{e(ex['id'])}</b> · gold {e(ex['label'])}{lines}</div></div>")
    parts.append("<h2>Suspected label errors</h2>")
    if a.suspects:
        parts.append("<table><tr><th>image</th><th>id</th><th>label</th><th>suggested</th><th>votes</th><th>answers</th></tr>")
        for s in a.suspects:
            answers = "<br>".join(f"<i>{e(m)}</i>: {e(t or '')}" for m, t in s["answers"].items())
            parts.append(f"<tr><td><img src='{_thumb(s['image'], 96)}'></td><td>{e(s['id'])}</td><td>{e(s['label'])}</td><td>{e(s['suggested'])}</td><td>{s['votes']}</td><td>{answers}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>none</p>")
    c = a.train_counts
    parts.append(f"<h2>Corrected training set</h2><p>kept {c['kept']}; dropped: {c['dropped_suspect']} suspected label errors, {c['dropped_disagree']} disagreeing, {c['dropped_empty']} empty, {c['dropped_failed']} failed.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
