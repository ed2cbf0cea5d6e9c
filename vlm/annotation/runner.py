"""One annotation run: every (mode, item) request not yet in the cache, then the outputs and the report.

Outputs under ``out_dir`` (the cache lives there too, so re-running the same command resumes):
``cache/<mode>.jsonl`` (append-only, one line per finished request), ``annotated/<mode>.jsonl`` (one row
per item: raw and cleaned answer, classes named, agreement), ``report.md`` / ``report.html`` /
``report.json``, ``train_corrected.jsonl`` and ``label_errors.jsonl``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from common import io
from common.errors import ConfigError, UserError
from vlm.caption_clean import CleanSettings

from .analysis import analyse, annotate_rows
from .cache import ResultCache
from .classes import ClassSet, load_classes
from .client import ChatClient, RequestFailed, image_url
from .dataset import Item, read_items, synthetic_items
from .prompts import load_modes

log = logging.getLogger(__name__)


def request_key(model: str, prompt: str, image_digest: str, gen: dict) -> str:
    """What decides an answer; a changed prompt, image, model or setting is a new request, not a cache hit."""
    blob = json.dumps({"model": model, "prompt": prompt, "image": image_digest, "gen": gen}, sort_keys=True)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node


def _generation(cfg) -> dict:
    gen = {"temperature": cfg.generation.temperature, "top_p": cfg.generation.top_p, "max_tokens": cfg.generation.max_tokens}
    for k, lo, hi in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        if isinstance(gen[k], bool) or not isinstance(gen[k], int | float) or not lo <= gen[k] <= hi:
            raise ConfigError(f"generation.{k}: expected a number in [{lo}, {hi}], got {gen[k]!r}")
    if isinstance(gen["max_tokens"], bool) or not isinstance(gen["max_tokens"], int) or gen["max_tokens"] < 1:
        raise ConfigError(f"generation.max_tokens: expected a positive integer, got {gen['max_tokens']!r}")
    return gen


def load_items(cfg, classes: ClassSet) -> list[Item]:
    path = cfg.data.path
    if not path:
        if cfg.data.synthetic is None:
            raise ConfigError("data.path: must be set (a JSONL of {id, image, <label_key>})")
        path = synthetic_items(_container(cfg.data.synthetic) or {}, cfg.paths.cache_dir)
    return read_items(path, classes, label_key=cfg.data.label_key, on_bad_record=cfg.data.on_bad_record, limit=cfg.data.limit)


def _check_endpoint(client: ChatClient) -> None:
    try:
        models = client.models()
    except RequestFailed as e:
        raise UserError(f"endpoint.base_url: {client.base_url}/models failed: {e.message}") from None
    if client.model not in models:
        raise ConfigError(f"endpoint.model: {client.model!r} is not served at {client.base_url} (it serves: {', '.join(models) or 'nothing'})")


def _ask(client: ChatClient, prompt: str, image: Path, gen: dict, transport: str) -> dict:
    t0 = time.perf_counter()
    try:
        r = client.chat(prompt, image_url(image, transport), **gen)
        return {"status": "ok", "answer": r.text, "finish_reason": r.finish_reason, "usage": r.usage, "attempts": r.attempts, "error": None, "elapsed_s": round(r.elapsed_s, 4)}
    except RequestFailed as e:
        return {"status": "error", "answer": None, "error": e.message, "attempts": e.attempts, "elapsed_s": round(time.perf_counter() - t0, 4)}
    except OSError as e:  # the image vanished or cannot be read since validation
        return {"status": "error", "answer": None, "error": f"{image}: {e.strerror or e}", "attempts": 0, "elapsed_s": 0.0}


@dataclass(frozen=True)
class Job:
    cache: ResultCache  # where the answer goes
    key: str  # request_key(...)
    fields: dict  # written into the cache row (id, mode)
    prompt: str
    image: Path


def make_client(cfg) -> ChatClient:
    """The ``endpoint`` node's client (its settings checked; no request made: see :func:`check_endpoint`)."""
    concurrency = int(cfg.endpoint.concurrency)
    if concurrency < 1:
        raise ConfigError(f"endpoint.concurrency: expected >= 1, got {concurrency}")
    if cfg.endpoint.image_transport not in ("data_url", "path"):
        raise ConfigError(f"endpoint.image_transport: expected data_url or path, got {cfg.endpoint.image_transport!r}")
    e = cfg.endpoint
    return ChatClient(e.base_url, e.model, e.api_key, e.timeout_s, e.retries)  # the openai client backs off


def check_endpoint(cfg, client: ChatClient) -> None:
    if cfg.endpoint.check:
        _check_endpoint(client)


def ask_all(client: ChatClient, todo: list[Job], total: int, gen: dict, transport: str, concurrency: int, progress: bool, where: Path) -> None:
    """Ask every job, ``concurrency`` in flight; each answer is appended to its cache as it arrives, so a
    killed run keeps what finished and a re-run asks only the rest."""
    log.info("%d of %d requests cached; %d to ask %s", total - len(todo), total, len(todo), client.base_url)
    if not todo:
        return
    from tqdm import tqdm

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="annotate")
    try:
        futures = {pool.submit(_ask, client, j.prompt, j.image, gen, transport): j for j in todo}
        with tqdm(total=total, initial=total - len(todo), desc="annotate", unit="req", disable=not progress) as bar:
            for fut in concurrent.futures.as_completed(futures):
                j = futures[fut]
                j.cache.append({"key": j.key, **j.fields, **fut.result(), "time": round(time.time(), 3)})
                bar.update(1)
    except KeyboardInterrupt:  # what finished is on disk; requests in flight are asked again next time
        pool.shutdown(wait=False, cancel_futures=True)
        done = total - len(todo) + sum(j.cache.done(j.key) for j in todo)
        raise UserError(f"interrupted: {done} of {total} requests are in {where}; run the same command again to resume") from None
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def run(cfg) -> dict:
    classes = load_classes(_container(cfg.classes.list), cfg.classes.file)
    modes = load_modes(_container(cfg.modes), _container(cfg.run_modes))
    gen = _generation(cfg)
    client = make_client(cfg)
    concurrency = int(cfg.endpoint.concurrency)
    items = load_items(cfg, classes)
    out = Path(cfg.out_dir)
    check_endpoint(cfg, client)

    digests = {it.id: it.image_digest() for it in items}
    defs = classes.definitions_text()
    prompts = {(m.name, it.id): m.render(defs, it.label) for m in modes for it in items}
    keys = {k: request_key(client.model, p, digests[k[1]], gen) for k, p in prompts.items()}

    with ExitStack() as stack:
        caches = {m.name: stack.enter_context(ResultCache(out / "cache" / f"{m.name}.jsonl")) for m in modes}
        todo = [Job(caches[m.name], keys[(m.name, it.id)], {"id": it.id, "mode": m.name}, prompts[(m.name, it.id)], it.image)
                for m in modes for it in items if not caches[m.name].done(keys[(m.name, it.id)])]
        ask_all(client, todo, len(modes) * len(items), gen, cfg.endpoint.image_transport, concurrency, cfg.progress, out / "cache")
        cached = {m.name: {it.id: caches[m.name].rows.get(keys[(m.name, it.id)]) for it in items} for m in modes}

    settings = CleanSettings(**_container(cfg.clean))
    rows = {m.name: annotate_rows(items, m, {k: v for k, v in cached[m.name].items() if v}, classes, settings) for m in modes}
    for m in modes:
        io.write_jsonl(out / "annotated" / f"{m.name}.jsonl", rows[m.name])
    an = cfg.analysis
    compare = _container(an.compare)
    analysis = analyse(
        items,
        modes,
        rows,
        classes,
        label_key=cfg.data.label_key,
        free_mode=an.free_mode,
        compare=compare,
        train_from=an.train_from,
        min_votes=an.min_votes,
        keep_disagreeing=an.keep_disagreeing,
        examples_per_class=an.examples_per_class,
        teacher=client.model,
        low_agreement=an.low_agreement,
    )
    meta = {"name": cfg.name, "model": client.model, "base_url": client.base_url, "items": len(items), "generation": gen}
    from .report import render_html, render_markdown

    failed = sum(r["status"] != "ok" for m in modes for r in rows[m.name])
    report = {
        **meta,
        "modes": [{"name": m.name, "title": m.title, "max_chars": m.max_chars} for m in modes],
        "per_class": analysis.per_class,
        "confusions": analysis.confusions,
        "diagnosis": analysis.diagnosis,
        "overall": analysis.overall,
        "length_effect": analysis.length_effect,
        "suspects": len(analysis.suspects),
        "train": analysis.train_counts,
        "failed": failed,
    }
    io.write_jsonl(out / "train_corrected.jsonl", analysis.train)
    io.write_jsonl(out / "label_errors.jsonl", sorted(analysis.suspects, key=lambda s: (s["label"], s["id"])))
    io.write_json(out / "report.json", report)
    io.write_text(out / "report.md", render_markdown(analysis, modes, meta, compare))
    io.write_text(out / "report.html", render_html(analysis, modes, meta, compare))
    agree = ", ".join(f"{m.name} {analysis.overall[m.name]['agreement']:.3f}" if analysis.overall[m.name]["agreement"] is not None else f"{m.name} n/a" for m in modes)
    print(f"vlm.annotate: {len(items)} items x {len(modes)} modes; agreement {agree}; {len(analysis.suspects)} suspected label errors; "
          f"{analysis.train_counts['kept']} training rows; {failed} failed" + (" (re-run to retry them)" if failed else "") + f"; report: {out / 'report.html'}", flush=True)
    return report
