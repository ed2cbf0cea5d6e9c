"""``+annotate=captions``: teacher captions for a product set, the seed's pipeline as one command.

Items are ``vlm.ingest``'s records (``{id, image, brand?, title?, description?}``; no class file, the brand
may be unknown). Each gets one brand-aware prompt (:class:`.prompts.CaptionPrompt`) with the seed's sampling
settings (``generation``: temperature 0.1, top_p 0.2, max_tokens 200). The answers are cached and resumable
like every annotation (:class:`.cache.ResultCache`), then, in this order, an item is

1. ``failed``: the request failed (re-running asks it again);
2. ``empty`` / ``garbage`` / ``loop`` / ``too_short``: dropped by cleaning (:func:`vlm.caption_clean.clean_tokens`:
   the length limit is in tokens, ``captions.max_tokens`` or else ``generation.max_tokens``, counted by
   ``captions.tokenizer``; a fragment is cut after the last full stop);
3. ``brand_not_named``: labelled with a brand its caption does not name (case-insensitive, aliases; with
   ``captions.require_brand``);
4. ``rare_brand``: its brand has fewer than ``captions.min_brand_samples`` captions left (the ``>= N`` filter);
5. else kept: a line of ``train.jsonl`` (``{id, image, brand, caption, ...}``, what ``vlm.train data=jsonl``
   reads as is).

Every item lands in exactly one of these (``report.json``: ``items == kept + sum(dropped)``);
``annotated.jsonl`` has every item with its raw answer, cleaned caption and the reason.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from common import io
from common.errors import ConfigError
from common.metrics.brand import BrandMatcher
from vlm.brands import load_brand_aliases
from vlm.caption_clean import CleanSettings, Tokens, clean_tokens

from .cache import ResultCache
from .dataset import read_caption_items
from .prompts import CaptionPrompt
from .runner import Job, _container, _generation, ask_all, check_endpoint, make_client, request_key

REASONS = ("failed", "empty", "garbage", "loop", "too_short", "brand_not_named", "rare_brand")


def run_captions(cfg) -> dict:
    cc = cfg.captions
    gen = _generation(cfg)
    max_tokens = int(cc.max_tokens or gen["max_tokens"])
    if cc.min_brand_samples < 1:
        raise ConfigError(f"captions.min_brand_samples: expected >= 1, got {cc.min_brand_samples}")
    prompt = CaptionPrompt(cc.prompt, _container(cc.known_lines), cc.no_known, tuple(cc.fields))
    tokens = Tokens(cc.tokenizer)
    aliases = load_brand_aliases(_container(cc.brands.aliases), cc.brands.aliases_file)
    client = make_client(cfg)
    if not cfg.data.path:
        raise ConfigError("data.path: required for +annotate=captions (the records.jsonl of python -m vlm.ingest)")
    items = read_caption_items(cfg.data.path, cfg.data.label_key or "brand", tuple(cc.fields), cfg.data.on_bad_record, cfg.data.limit)
    out = Path(cfg.out_dir)
    io.check_writable(out / "train.jsonl", "out_dir", {"data.path": cfg.data.path})
    check_endpoint(cfg, client)

    prompts = {it.id: prompt.render(it.brand, it.fields) for it in items}
    keys = {it.id: request_key(client.model, prompts[it.id], it.image_digest(), gen) for it in items}
    with ResultCache(out / "cache" / "captions.jsonl") as cache:
        todo = [Job(cache, keys[it.id], {"id": it.id, "mode": "captions"}, prompts[it.id], it.image)
                for it in items if not cache.done(keys[it.id])]
        ask_all(client, todo, len(items), gen, cfg.endpoint.image_transport, int(cfg.endpoint.concurrency), cfg.progress, out / "cache")
        answers = {it.id: cache.rows.get(keys[it.id]) for it in items}

    settings = CleanSettings(**_container(cfg.clean))
    matcher = BrandMatcher(sorted({it.brand for it in items if it.brand}), aliases)
    rows = []
    for it in items:
        a = answers[it.id]
        row = {"id": it.id, "image": str(it.image), "brand": it.brand, "prompt": prompts[it.id], "status": (a or {}).get("status", "missing"),
               "answer_raw": (a or {}).get("answer"), "finish_reason": (a or {}).get("finish_reason"), "caption": "", "clean_flags": [],
               "named": [], "dropped": None}
        if not a or a.get("status") != "ok":
            row.update(dropped="failed", error=(a or {}).get("error", "not run"))
        else:
            text, flags = clean_tokens(a.get("answer"), settings, max_tokens, tokens)
            row.update(caption=text, clean_flags=flags, tokens=tokens.count(text) if text else 0)
            if not text:
                row["dropped"] = next((f for f in ("garbage", "loop", "too_short") if f in flags), "empty")
            else:
                row["named"] = sorted(matcher.names(text))
                if it.brand and cc.require_brand and it.brand not in row["named"]:
                    row["dropped"] = "brand_not_named"
        rows.append(row)
    survivors = Counter(r["brand"] for r in rows if r["dropped"] is None and r["brand"])
    rare = {b for b, n in survivors.items() if n < cc.min_brand_samples}
    for r in rows:
        if r["dropped"] is None and r["brand"] in rare:
            r["dropped"] = "rare_brand"

    by_id = {it.id: it for it in items}
    train = []
    for r in rows:
        if r["dropped"] is None:
            it = by_id[r["id"]]
            rec = {k: v for k, v in it.record.items() if k not in ("caption", "conversations", "prompt")}
            rec.update(id=it.id, image=str(it.image), brand=it.brand, caption=r["caption"],
                       teacher={"model": client.model, "finish_reason": r["finish_reason"]})
            train.append(rec)
    dropped = Counter(r["dropped"] for r in rows if r["dropped"])
    report = {
        "name": cfg.name, "model": client.model, "base_url": client.base_url, "generation": gen, "items": len(items),
        "kept": len(train), "dropped": {k: dropped.get(k, 0) for k in REASONS},
        "truncated": sum("truncated" in r["clean_flags"] for r in rows), "fragment_cut": sum("fragment" in r["clean_flags"] for r in rows),
        "hit_max_tokens": sum(r["finish_reason"] == "length" for r in rows),  # the teacher stopped at generation.max_tokens
        "limits": {"max_tokens": max_tokens, "tokenizer": tokens.spec, "min_brand_samples": cc.min_brand_samples},
        "brands": {"labelled": len({it.brand for it in items if it.brand}), "kept": len({r["brand"] for r in train if r["brand"]}),
                   "dropped_rare": sorted(rare)},
        "unbranded": {"items": sum(it.brand is None for it in items), "kept": sum(r["brand"] is None for r in train)},
    }
    assert report["kept"] + sum(report["dropped"].values()) == report["items"]
    io.write_jsonl(out / "annotated.jsonl", rows)
    io.write_jsonl(out / "train.jsonl", train)
    io.write_json(out / "report.json", report)
    io.write_text(out / "report.md", render_markdown(report, rows))
    why = ", ".join(f"{k} {v}" for k, v in report["dropped"].items() if v)
    print(f"vlm.annotate captions: {len(items)} items -> {len(train)} captions kept" + (f", dropped {why}" if why else "")
          + f"; {report['brands']['kept']} brands; train set: {out / 'train.jsonl'}", flush=True)
    return report


def render_markdown(report: dict, rows: list[dict], examples: int = 3) -> str:
    n = report["items"]
    lim = report["limits"]
    lines = [f"# Teacher captions: {report['name']}", "",
             f"Teacher `{report['model']}` at {report['base_url']}, generation {report['generation']}; cleaning limit "
             f"{lim['max_tokens']} tokens ({lim['tokenizer']}), brand filter >= {lim['min_brand_samples']}.", "",
             "| outcome | items | share |", "|---|---|---|", f"| kept | {report['kept']} | {report['kept'] / n:.1%} |"]
    lines += [f"| dropped: {k} | {v} | {v / n:.1%} |" for k, v in report["dropped"].items()]
    lines += [f"| **total** | {n} | 100% |", "",
              f"Answers the teacher ended at max_tokens: {report['hit_max_tokens']}; cut after the last full stop: "
              f"{report['fragment_cut']}; cut at the token limit: {report['truncated']}.",
              f"Brands: {report['brands']['labelled']} labelled, {report['brands']['kept']} kept"
              + (f"; dropped as rare: {', '.join(report['brands']['dropped_rare'])}" if report["brands"]["dropped_rare"] else "") + ".",
              f"Items without a brand label: {report['unbranded']['items']} ({report['unbranded']['kept']} kept).", ""]
    for reason in REASONS:
        ex = [r for r in rows if r["dropped"] == reason][:examples]
        if ex:
            lines += [f"## {reason}", ""]
            lines += [f"- `{r['id']}` ({r['brand'] or 'no brand'}): {(r.get('answer_raw') or r.get('error') or '')[:200]!r}" for r in ex]
            lines.append("")
    return "\n".join(lines)
