"""``python -m vlm.bench`` (``make bench-vlm``): the captioner's cost and accuracy figures as one Markdown table.

1. Training step time and peak memory, freeze_llm vs full fine-tune (each in its own process, so the peak
   resident memory is its own; on a GPU also ``torch.cuda.max_memory_allocated``).
2. Generation tokens/s with vs without the KV cache (same prompts, a fixed number of new tokens).
3. Brand accuracy of the captioner vs a plain classifier (the same vision tower + a linear head): on the
   synthetic test split and on ../shared/datasets/flickrlogos27_subset (deterministic per-brand split:
   per brand, images sorted by name, the first 8 train, the other 4 test). A caption is right when it names
   the gold brand and no other (for "none" images: names no brand).

    python -m vlm.bench [--epochs 20] [--skip-flickr] [--out reports/vlm_bench.md]

4. ``--real-size``: random-weight towers with the real configs (InternViT-300M-448px-class vision +
   Qwen2.5-1.5B-class LLM, ``vlm.realsize``) loaded by path like a user's run: per policy and batch size the mean
   step time, peak memory (each row in a fresh process) and trainable parameters; whether 2 x 24 GB at global
   batch 24 fits (DDP / ZeRO-2, micro-batch + accumulation); captions/s of greedy generation with / without the
   KV cache. The section "Real size (random weights)" of ``--docs`` (docs/bench/vlm.md) is replaced.

    python -m vlm.bench --real-size [--policies freeze_llm,lora,full_ft] [--batch-sizes 1,2] [--steps 2]
                        [--new-tokens 200] [--gen-batch 2] [--grad-ckpt] [--scale tiny]

5. ``--only dataset-rss``: peak resident memory of building the data set (records read and header-checked,
   tokens encoded) for 1k vs 10k synthetic 448 px records, each size in a fresh process: flat when images are
   decoded per item, not at build time (decoded, 10k such images would be 6 GB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import io, run
from common.bench import machine
from common.config import project_root, validate
from common.data.records import read_csv
from common.metrics.brand import BrandMatcher
from vlm.build import build
from vlm.chat import prompt_ids, user_message
from vlm.data import BrandCaptionData, prepare_image
from vlm.models.vision import VisionTower
from vlm.schemas import SCHEMAS

ROOT = project_root()


def _compose(*overrides: str):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    import common.config  # noqa: F401

    GlobalHydra.instance().clear()
    with initialize_config_module("conf.vlm", version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.cache_dir={ROOT / '.cache'}", "logger=none",
                                          f"paths.output_dir={ROOT / 'logs' / 'vlm.bench' / 'scratch'}", *overrides])
    return validate(cfg, SCHEMAS)


# --------------------------------------------------------------------------------------------- 1. step time
def _worker_step(exp: str, steps: int) -> dict:
    cfg = _compose(f"+exp={exp}")
    module, dm = build(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    vlm = module.vlm.to(device).train()
    opt = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-4)
    batch = next(iter(dm.train_dataloader()))
    b = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
    from vlm.realsize import timed_steps

    times = timed_steps(vlm, b, opt, steps, warmup=2, device=device)
    out = {
        "ms_per_step": 1000 * sorted(times)[len(times) // 2],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable": sum(p.numel() for p in vlm.parameters() if p.requires_grad),
        "batch": int(b["input_ids"].shape[0]),
    }
    if device == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def step_costs(steps: int) -> dict[str, dict]:
    res = {}
    for exp in ("freeze_llm", "full_ft"):
        r = subprocess.run([sys.executable, "-m", "vlm.bench", "--worker-step", exp, "--steps", str(steps)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"step worker {exp} failed:\n{r.stderr[-2000:]}")
        res[exp] = json.loads(r.stdout.strip().splitlines()[-1])
    return res


# ------------------------------------------------------------------------------------------- 2. KV cache
def kv_cache_speed(new_tokens: int = 32, batch: int = 16) -> dict[str, float]:
    cfg = _compose("+exp=freeze_llm")
    module, _ = build(cfg)
    vlm = module.vlm.eval()
    ids = prompt_ids(vlm.tokenizer, [user_message("Describe the product in the image.")], vlm.num_image_tokens)
    px = torch.rand(batch, 3, vlm.vision.image_size, vlm.vision.image_size)
    out = {}
    for cache in (True, False):  # VLM.generate: its uncached path really recomputes (generate() would not)
        vlm.llm.generation_config.min_new_tokens = 2
        vlm.generate(px, [ids] * batch, max_new_tokens=2, use_cache=cache)  # warm-up at the timed shapes
        vlm.llm.generation_config.min_new_tokens = new_tokens  # random-ish LM: never stop early
        t = time.perf_counter()
        with torch.no_grad():
            gen = vlm.generate(px, [ids] * batch, max_new_tokens=new_tokens, use_cache=cache)
        dt = time.perf_counter() - t
        out["with" if cache else "without"] = sum(len(g) for g in gen) / dt
    out["prompt_len"] = len(ids)
    return out


# ------------------------------------------------------------------------------ 3. captioner vs classifier
def _train_captioner(overrides: list[str]) -> Path:
    out = ROOT / "logs" / "vlm.bench" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    cfg = _compose(*overrides, "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false",
                   "callbacks.early_stopping=null", f"paths.output_dir={out}")
    run.train(cfg, build=build)
    return out


def _classifier_accuracy(cfg_overrides: list[str], epochs: int) -> float:
    """The vision tower of the same config + a linear head on (none | brand), trained from scratch."""

    cfg = _compose(*cfg_overrides)
    torch.manual_seed(cfg.seed)
    dm = BrandCaptionData(cfg.data, cfg.model.vision.image_size, cfg.paths.cache_dir, seed=cfg.seed)
    classes = ["<none>", *dm.brands]

    def xy(split):
        recs = [r for r in dm.records[split] if r.kind != "none_brand"]
        x = torch.stack([torch.from_numpy(prepare_image(r.image, dm.image_size, r.bbox, dm.cfg.crop,
                                                        dm.cfg.crop_margin)).float() / 255 for r in recs])
        y = torch.tensor([classes.index(r.brand or "<none>") for r in recs])
        return x, y

    xtr, ytr = xy("train")
    xte, yte = xy("test")
    tower = VisionTower(cfg.model.vision)
    head = torch.nn.Linear(tower.out_dim, len(classes))
    opt = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=cfg.optim.lr)
    bs = cfg.data.batch_size
    g = torch.Generator().manual_seed(cfg.seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xtr), generator=g).split(bs):
            loss = torch.nn.functional.cross_entropy(head(tower(xtr[idx]).mean(1)), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = torch.cat([head(tower(x).mean(1)).argmax(1) for x in xte.split(256)])
    return float((pred == yte).float().mean())


def _captioner_accuracy(run_dir: Path) -> float:
    preds = [json.loads(x) for x in (run_dir / "predictions_test.jsonl").read_text().splitlines()]
    brands = sorted({p["brand"] for p in preds if p["brand"]})
    m = BrandMatcher(brands)
    rows = [p for p in preds if p["kind"] != "none_brand"]
    ok = [m.names(p["pred"]) == ({p["brand"]} if p["brand"] else set()) for p in rows]
    return sum(ok) / len(ok)


def flickr_jsonl(out: Path) -> tuple[Path, Path] | None:
    root = ROOT.parent / "shared" / "datasets" / "flickrlogos27_subset"
    if not (root / "labels.csv").exists():
        return None
    rows = read_csv(root / "labels.csv", required=("image", "brand"))
    by_brand: dict[str, list[str]] = {}
    for r in rows:
        by_brand.setdefault(r["brand"], []).append(r["image"])
    train, test = [], []
    for brand, images in sorted(by_brand.items()):
        for i, im in enumerate(sorted(images)):
            rec = {"id": im, "image": str(root / "images" / im), "brand": brand, "caption": f"A photo with the {brand} logo."}
            (train if i < 8 else test).append(rec)
    out.mkdir(parents=True, exist_ok=True)
    return io.write_jsonl(out / "train.jsonl", train), io.write_jsonl(out / "test.jsonl", test)


def accuracy_rows(epochs: int, skip_flickr: bool) -> list[tuple[str, float, float]]:
    rows = []
    synth = ["+exp=freeze_llm", f"trainer.max_epochs={epochs}"]
    cap_dir = _train_captioner(synth)
    rows.append(("synthetic (test, logo + none images)", _captioner_accuracy(cap_dir), _classifier_accuracy(synth, epochs)))
    if not skip_flickr:
        files = flickr_jsonl(ROOT / ".cache" / "vlm" / "flickrlogos27")
        if files:
            fl = ["+exp=freeze_llm", "data=jsonl", f"data.train_file={files[0]}", f"data.test_file={files[1]}",
                  "data.val_fraction=0.125", "data.batch_size=16", f"trainer.max_epochs={epochs}",
                  "data.prompt='Which brand is shown?'"]
            cap_dir = _train_captioner(fl)
            rows.append(("flickrlogos27_subset (27 brands, 4 test images each)", _captioner_accuracy(cap_dir),
                         _classifier_accuracy(fl, epochs)))
    return rows


# ------------------------------------------------------------------------------- 4. data set build memory
RSS_SIZES = (1000, 10000)


def _rss_records(n: int, out: Path) -> Path:
    """``n`` JSONL records over the rendered 448 px synthetic images (a pool reused under distinct ids)."""
    from vlm import synth

    root = synth.ensure(synth.SynthConfig(image_size=448, brands=6, train_logo_per_brand=20, train_none=40,
                                          train_none_brand_per_brand=5), ROOT / ".cache")
    pool = [json.loads(x) for x in (root / "train.jsonl").read_text().splitlines()]
    rows = [{**pool[i % len(pool)], "id": f"r{i}", "image": str(root / pool[i % len(pool)]["image"])} for i in range(n)]
    return io.write_jsonl(out / f"records_{n}.jsonl", rows)


def _worker_rss(n: int) -> dict:
    from omegaconf import OmegaConf

    from vlm import synth
    from vlm.models.llm import train_tokenizer
    from vlm.schemas import DataSchema

    path = _rss_records(n, ROOT / ".cache" / "vlm" / "bench_rss")
    tok = train_tokenizer(synth.caption_corpus(), 512)
    cfg = OmegaConf.structured(DataSchema)
    cfg.source, cfg.train_file, cfg.val_fraction, cfg.tiles.max_num = "jsonl", str(path), 0.1, 12
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    dm = BrandCaptionData(cfg, 448, ROOT / ".cache")
    dm.attach(tok, 256)  # InternViT-448 + pixel shuffle: 256 tokens a tile
    seconds = time.perf_counter() - t
    item = dm.datasets["train"][0]
    return {"records": n, "before_mb": before, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "seconds": seconds, "tiles_first": int(item["pixels"].shape[0]),
            "decoded_gb": n * 3 * 448 * 448 / 1e9}


def dataset_rss() -> list[dict]:
    res = []
    for n in RSS_SIZES:
        r = subprocess.run([sys.executable, "-m", "vlm.bench", "--worker-rss", str(n)], cwd=ROOT, capture_output=True,
                           text=True, timeout=1200)
        if r.returncode != 0:
            raise RuntimeError(f"rss worker {n} failed:\n{r.stderr[-2000:]}")
        res.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return res


def rss_lines(res: list[dict], command: str) -> list[str]:
    lines = ["## data set build memory", "", f"command: `{command}`  ", f"machine: {machine()}", "",
             "| records (448 px, tiles.max_num=12) | peak RSS, MB | of it before the build, MB | build, s | "
             "the same images decoded, GB |", "|---|---|---|---|---|"]
    lines += [f"| {r['records']:,} | {r['peak_mb']:.0f} | {r['before_mb']:.0f} | {r['seconds']:.1f} | {r['decoded_gb']:.1f} |"
              for r in res]
    a, b = res[0], res[-1]
    per = (b["peak_mb"] - a["peak_mb"]) * 1024 / (b["records"] - a["records"])
    lines += ["", f"{per:.1f} KB more per record (a decoded 448 px image is {3 * 448 * 448 / 1024:.0f} KB)."]
    return lines


# ------------------------------------------------------------------------------------ 5. real-size towers
def _real_cfg(spec: dict):
    from vlm import realsize

    over = realsize.overrides(spec["policy"], Path(spec["vision_dir"]), Path(spec["llm_dir"]), spec["grad_ckpt"])
    return _compose(*over)


def _worker_real(spec: dict) -> dict:
    from vlm import realsize

    torch.manual_seed(0)
    cfg = _real_cfg(spec)
    if spec["kind"] == "gen":
        return realsize.generation_row(cfg, spec["batch"], spec["new_tokens"])
    return realsize.step_row(cfg, spec["policy"], spec["batch"], spec["steps"])


def _run_real(spec: dict, fresh_process: bool) -> dict:
    if not fresh_process:
        return _worker_real(spec)
    r = subprocess.run([sys.executable, "-m", "vlm.bench", "--worker-real", json.dumps(spec)], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"real-size worker {spec} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def real_size(args, command: str, fresh_process: bool = True) -> str:
    """Every row of ``--real-size`` (each in a fresh process unless ``fresh_process`` is false: tests), the
    section written into ``args.docs``; returns the section's text."""
    from vlm import realsize

    cache = Path(args.cache_dir) if args.cache_dir else ROOT / ".cache"
    t0 = time.perf_counter()
    vision_dir, llm_dir = realsize.ensure_towers(args.scale, cache)
    print(f"towers: {vision_dir.parent} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    gpu = torch.cuda.is_available()
    batches = [int(x) for x in (args.batch_sizes or ("8,24" if gpu else "1,2")).split(",")]
    steps = args.steps if args.steps is not None else 2
    base = {"vision_dir": str(vision_dir), "llm_dir": str(llm_dir), "grad_ckpt": bool(args.grad_ckpt)}
    rows = []
    for pol in args.policies.split(","):
        if pol not in realsize.POLICIES:
            raise SystemExit(f"error: --policies: unknown policy {pol!r} ({', '.join(realsize.POLICIES)})")
        for b in batches:
            t = time.perf_counter()
            if rows and rows[-1]["policy"] == pol and rows[-1]["skipped"] and b >= rows[-1]["batch"]:
                rows.append({**rows[-1], "batch": b})  # does not fit at a smaller batch: not built again
                continue
            rows.append(_run_real({**base, "kind": "step", "policy": pol, "batch": b, "steps": steps}, fresh_process))
            print(f"{pol} batch {b}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    gen = None
    if args.new_tokens > 0:
        gen_batch = args.gen_batch or (8 if gpu else 2)
        gen = _run_real({**base, "kind": "gen", "policy": "freeze_llm", "batch": gen_batch,
                         "new_tokens": args.new_tokens}, fresh_process)
    section = realsize.lines(rows, gen, command, machine(), args.scale)
    section.append(f"\nTotal wall time {time.perf_counter() - t0:.0f} s (towers built or found in {cache}).")
    docs = Path(args.docs)
    old = docs.read_text() if docs.exists() else "# vlm bench\n"
    io.write_text(docs, realsize.replace_section(old, section))
    return "\n".join(section) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm.bench")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps", type=int, default=None, help="timed steps a row (default 8; --real-size: 2)")
    p.add_argument("--skip-flickr", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--out", default=str(ROOT / "reports" / "vlm_bench.md"))
    p.add_argument("--only", choices=["dataset-rss"], default=None, help="one figure on its own")
    p.add_argument("--worker-step", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-rss", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--real-size", action="store_true", help="random-weight real-size towers (see the module doc)")
    p.add_argument("--scale", choices=["real", "tiny"], default="real", help="--real-size: tiny = the configs shrunk")
    p.add_argument("--policies", default="freeze_llm,lora,full_ft", help="--real-size: comma-separated")
    p.add_argument("--batch-sizes", default=None, help="--real-size: comma-separated (default 1,2 on CPU, 8,24 on a GPU)")
    p.add_argument("--new-tokens", type=int, default=200, help="--real-size: generated tokens (0: no generation row)")
    p.add_argument("--gen-batch", type=int, default=None, help="--real-size: generation batch (default 2 CPU, 8 GPU)")
    p.add_argument("--grad-ckpt", action="store_true", help="--real-size: model.gradient_checkpointing=true")
    p.add_argument("--docs", default=str(ROOT / "docs" / "bench" / "vlm.md"), help="--real-size: file whose section is replaced")
    p.add_argument("--cache-dir", default=None, help="--real-size: where the towers are saved (default .cache)")
    p.add_argument("--worker-real", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker_step:
        print(json.dumps(_worker_step(args.worker_step, args.steps or 8)))
        return 0
    if args.worker_rss:
        print(json.dumps(_worker_rss(args.worker_rss)))
        return 0
    if args.worker_real:
        print(json.dumps(_worker_real(json.loads(args.worker_real))))
        return 0
    if args.real_size:
        print(real_size(args, f"python -m vlm.bench {' '.join(argv or sys.argv[1:])}"))
        return 0
    if args.only == "dataset-rss":
        text = "\n".join(rss_lines(dataset_rss(), f"python -m vlm.bench {' '.join(argv or sys.argv[1:])}")) + "\n"
        io.write_text(Path(args.out).with_name("vlm_bench_dataset_rss.md"), text)
        print(text)
        return 0
    t0 = time.time()
    steps = step_costs(args.steps or 8)
    kv = kv_cache_speed()
    acc = [] if args.skip_accuracy else accuracy_rows(args.epochs, args.skip_flickr)
    f, s = steps["freeze_llm"], steps["full_ft"]
    lines = [
        "# vlm bench", "",
        f"command: `python -m vlm.bench {' '.join(argv or sys.argv[1:])}`  ",
        f"machine: {machine()}  ",
        f"total wall time: {time.time() - t0:.0f} s (embedded tiny config)", "",
        "| figure | freeze_llm | full fine-tune |", "|---|---|---|",
        f"| train step (batch {f['batch']}), median ms | {f['ms_per_step']:.0f} | {s['ms_per_step']:.0f} |",
        f"| peak resident memory, MB | {f['peak_rss_mb']:.0f} | {s['peak_rss_mb']:.0f} |",
        f"| trainable parameters | {f['trainable']:,} | {s['trainable']:,} |",
    ]
    if "peak_cuda_mb" in f:
        lines.append(f"| peak CUDA memory, MB | {f['peak_cuda_mb']:.0f} | {s['peak_cuda_mb']:.0f} |")
    lines += ["", "| generation (greedy, batch 16, 32 new tokens) | with KV cache | without KV cache |", "|---|---|---|",
              f"| tokens/s (prompt {kv['prompt_len']} tokens) | {kv['with']:.0f} | {kv['without']:.0f} |"]
    if acc:
        lines += ["", f"| brand accuracy ({args.epochs} epochs each) | captioner (freeze_llm) | classifier (same tower + linear) |",
                  "|---|---|---|"]
        lines += [f"| {name} | {a:.3f} | {b:.3f} |" for name, a, b in acc]
    text = "\n".join(lines) + "\n"
    io.write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
