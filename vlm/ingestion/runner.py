"""The ingest job: table rows -> fetched, verified images -> the records JSONL, the rejects and a report.

Counts add up: ``rows = records + rejected``, and every rejected row is in ``rejects.jsonl`` with its
``file:line``, source and reason. State lives in the image cache's index (``<images_dir>/index.jsonl``, one
line appended and fsynced per fetched image, torn last line cut on the next start, see
:class:`vlm.annotation.cache.ResultCache`): a re-run fetches only sources without a sound cached file, and
a run killed at any point (SIGKILL included) loses at most the fetches in flight. The outputs are written
whole and atomically at the end, one record per id.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf

from common import io
from common.errors import ConfigError, DataError
from vlm.annotation.cache import ResultCache
from vlm.brands import BrandNames, brand_stats, load_brand_aliases, render_markdown

from .fetch import Fetcher, ImageCache, Rejected
from .table import read_table

log = logging.getLogger(__name__)


def _check(cfg) -> None:
    f = cfg.fetch
    for key, value, lo in (("fetch.workers", f.workers, 1), ("fetch.per_host", f.per_host, 1), ("fetch.retries", f.retries, 0),
                           ("fetch.max_bytes", f.max_bytes, 1), ("min_brand_samples", cfg.min_brand_samples, 1)):
        if value < lo:
            raise ConfigError(f"{key}: expected >= {lo}, got {value}")
    if f.timeout_s <= 0:
        raise ConfigError(f"fetch.timeout_s: expected > 0, got {f.timeout_s}")
    if cfg.on_bad_record not in ("error", "skip"):
        raise ConfigError(f"on_bad_record: expected error or skip, got {cfg.on_bad_record!r}")


def _cached(index: ResultCache, cache: ImageCache, source: str) -> dict | None:
    row = index.rows.get(source)
    if not row or row.get("status") != "ok":
        return None
    path = cache.root / row["path"]
    return row if path.is_file() and path.stat().st_size == row.get("bytes") else None


def run(cfg) -> dict:
    if not cfg.table:
        raise ConfigError("table: required (a CSV, TSV, parquet, JSONL or JSON product table)")
    _check(cfg)
    table = Path(cfg.table)
    out = Path(cfg.out_dir)
    records_path = out / "records.jsonl"
    io.check_writable(records_path, "out_dir", {"table": table})
    rows = read_table(table, cfg.columns, cfg.format)
    if cfg.limit:
        rows = rows[: cfg.limit]
    if not rows:
        raise DataError(f"{table}: no rows")
    names = BrandNames(load_brand_aliases(OmegaConf.to_container(cfg.brands.aliases), cfg.brands.aliases_file))
    names.fit(r.brand for r in rows)

    rejects: list[dict] = []

    def reject(row, reason: str, detail: str = "") -> None:
        if cfg.on_bad_record == "error" and reason in ("no_id", "no_image", "duplicate_id"):
            raise DataError(f"{row.where}: {detail or reason} (on_bad_record=skip lists it in rejects.jsonl instead)")
        rejects.append({"where": row.where, "id": row.id, "source": row.image, "reason": reason, "detail": detail})

    usable, first_seen = [], {}
    for row in rows:
        if row.id is None:
            reject(row, "no_id", f"empty '{cfg.columns.id}'")
        elif row.image is None:
            reject(row, "no_image", f"empty '{cfg.columns.image}'")
        elif row.id in first_seen:
            reject(row, "duplicate_id", f"duplicate id {row.id!r} (first seen at {first_seen[row.id]})")
        else:
            first_seen[row.id] = row.where
            usable.append(row)

    cache = ImageCache(cfg.images_dir)
    fetcher = Fetcher(cache, cfg.image_root or table.parent, cfg.fetch)
    results: dict[str, dict] = {}
    with ResultCache(cache.root / "index.jsonl", dir_key="images_dir") as index:
        swept = cache.sweep()
        if swept:
            log.warning("%s: removed %d temporary file(s) an interrupted run left", cache.root, swept)
        sources = list(dict.fromkeys(r.image for r in usable))
        for s in sources:
            if (hit := _cached(index, cache, s)) is not None:
                results[s] = hit
        todo = [s for s in sources if s not in results]
        log.info("%d of %d images cached; %d to fetch", len(sources) - len(todo), len(sources), len(todo))
        fetched = 0
        if todo:
            from tqdm import tqdm

            def one(source: str) -> dict:
                try:
                    f = fetcher.fetch(source)
                except Rejected as e:
                    return {"key": source, "status": "rejected", "reason": e.reason, "detail": e.detail}
                return {"key": source, "status": "ok", "sha256": f.sha256, "path": str(f.path.relative_to(cache.root)),
                        "width": f.width, "height": f.height, "bytes": f.bytes}

            pool = concurrent.futures.ThreadPoolExecutor(cfg.fetch.workers, thread_name_prefix="ingest")
            try:
                with tqdm(total=len(sources), initial=len(sources) - len(todo), desc="ingest", unit="img", disable=not cfg.progress) as bar:
                    futures = [pool.submit(one, s) for s in todo]
                    for fut in concurrent.futures.as_completed(futures):
                        res = fut.result()
                        if res["status"] == "ok":
                            index.append(res)
                            fetched += 1
                        results[res["key"]] = res
                        bar.update(1)
            except BaseException:  # Ctrl-C / SIGTERM: what is fetched is in the index; do not wait for the rest
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown(wait=True)

    records = []
    for row in usable:
        res = results[row.image]
        if res["status"] != "ok":
            reject(row, res["reason"], res.get("detail", ""))
            continue
        rec = {"id": row.id, "image": str(cache.root / res["path"]), "brand": names(row.brand), **row.fields,
               "source": row.image, "sha256": res["sha256"]}
        records.append(rec)
    reasons = Counter(r["reason"] for r in rejects)
    bad_sources = sum(v["status"] != "ok" for v in results.values())
    assert len(records) + len(rejects) == len(rows)  # every row is a record or a listed reject
    io.write_jsonl(records_path, records)
    io.write_jsonl(out / "rejects.jsonl", rejects)
    counts = Counter(r["brand"] for r in records if r["brand"])
    stats = brand_stats({str(records_path): (counts, sum(r["brand"] is None for r in records))}, cfg.min_brand_samples)
    spellings = {}
    for r in rows:
        if (b := names(r.brand)) is not None:
            spellings.setdefault(b, set()).add(BrandNames.clean(r.brand))
    report = {
        "table": str(table), "rows": len(rows), "records": len(records), "rejected": len(rejects), "reasons": dict(reasons),
        "images": {"sources": len(results), "fetched": fetched, "cached": len(results) - bad_sources - fetched, "rejected": bad_sources},
        "brands": stats["files"][str(records_path)], "merged_spellings": {b: sorted(s) for b, s in spellings.items() if len(s) > 1},
    }
    io.write_json(out / "report.json", report)
    md = [f"# Ingest of {table}", "", f"{len(rows)} rows: {len(records)} records, {len(rejects)} rejected"
          + (" (" + ", ".join(f"{k} {v}" for k, v in reasons.most_common()) + ")" if rejects else "") + ".", "",
          f"Images: {fetched} fetched, {report['images']['cached']} from the cache ({cache.root}).", ""]
    if report["merged_spellings"]:
        md += ["Spellings folded into one brand: " + "; ".join(f"{b} <- {', '.join(s)}" for b, s in report["merged_spellings"].items()), ""]
    io.write_text(out / "report.md", "\n".join(md) + "\n" + render_markdown(stats).replace("# Brand statistics", "## Brand statistics"))
    print(f"vlm.ingest: {len(rows)} rows -> {len(records)} records, {len(rejects)} rejected"
          + (f" ({', '.join(f'{k} {v}' for k, v in reasons.most_common())})" if rejects else "")
          + f"; {fetched} images fetched, {report['images']['cached']} cached; {len(counts)} brands; "
          f"records: {records_path}; rejects: {out / 'rejects.jsonl'}", flush=True)
    return report
