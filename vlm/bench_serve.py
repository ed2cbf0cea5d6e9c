"""``python -m vlm.bench_serve``: load test of ``vlm.serve``, batched vs unbatched, through the ``openai`` client.

For each backend (the echo backend with a simulated per-call cost; a captioner export when ``--checkpoint``
is given) and each batching setting (``batch.max_size`` = ``--max-batch`` vs 1), a ``python -m vlm.serve``
subprocess on a free loopback port gets ``--requests`` chat requests at once from one ``AsyncOpenAI``
client (after a short warm-up): p50 / p99 latency per request and throughput, side by side. Echo answers
are checked against the request they belong to (a mix-up fails the bench). The section "HTTP serving:
batched vs unbatched" of ``--docs`` (docs/bench/vlm.md) is replaced.

    python -m vlm.bench_serve [--requests 200] [--max-batch 16] [--call-ms 20] [--item-ms 1]
                              [--checkpoint logs/vlm.train/runs/<time>/captioner] [--docs docs/bench/vlm.md]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import io as common_io
from common.bench import cpu_name, load
from common.config import project_root
from vlm.realsize import replace_section

ROOT = project_root()
HEAD = "## HTTP serving: batched vs unbatched (`vlm.bench_serve`)"
MODEL = "vlm-captioner"
CAPTION_PROMPT = "Describe the product in the image."


def _images(n: int) -> list[tuple[str, object]]:
    """``n`` distinct 64 px images as (data URL, PIL image)."""
    from PIL import Image

    out = []
    for i in range(n):
        im = Image.new("RGB", (64, 64), (20 + 11 * i % 230, 240 - 9 * i % 230, (60 * i) % 256))
        im.paste((255 - 12 * i % 250, 40, 10 * i % 250), (8 + i % 20, 8, 40 + i % 20, 30 + i % 20))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out.append(("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), im))
    return out


def start(overrides: list[str], workdir: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vlm.serve", "port=0", f"hydra.run.dir={workdir}", f"paths.log_dir={workdir}", *overrides],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=open(workdir / "serve.log", "w"), text=True)
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise SystemExit(f"error: vlm.serve did not start: {(workdir / 'serve.log').read_text()[-2000:]}")
    return proc, line.split(" on ", 1)[1].strip()


async def _load(url: str, requests: int, images, max_tokens: int, check: bool, prompt: str | None) -> dict:
    import openai

    from vlm.serving.backends import EchoBackend

    jobs = [(images[i % len(images)], prompt or f"request {i}: which brand is this?") for i in range(requests)]
    async with openai.AsyncOpenAI(base_url=url, api_key="-", max_retries=0, timeout=600) as client:

        async def one(job):
            (data, _), prompt = job
            t = time.perf_counter()
            r = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data}}, {"type": "text", "text": prompt}]}], temperature=0, max_tokens=max_tokens)
            return time.perf_counter() - t, r.choices[0].message.content

        await asyncio.gather(*(one(j) for j in jobs[:16]))  # warm-up: connections, first model calls
        t0 = time.perf_counter()
        done = await asyncio.gather(*(one(j) for j in jobs))
        wall = time.perf_counter() - t0
    lat = sorted(d for d, _ in done)
    mixed = sum(text != EchoBackend.answer(im, p, max_tokens) for ((_, im), p), (_, text) in zip(jobs, done, strict=True)) if check else None
    if mixed:
        raise SystemExit(f"error: {mixed} of {requests} echo answers belong to another request")

    def q(p: float) -> float:
        return lat[min(len(lat) - 1, round(p * (len(lat) - 1)))] * 1000

    return {"p50": q(0.5), "p99": q(0.99), "rps": requests / wall, "wall": wall}


def run(args, argv: list[str]) -> list[str]:
    images = _images(20)
    # echo: a prompt of its own per request (a mix-up shows); the captioner: one prompt for all, as when a
    # product set is captioned (Captioner.caption takes one prompt per call: distinct prompts are separate calls)
    setups = [("echo", ["backend=echo", f"backend.call_ms={args.call_ms}", f"backend.item_ms={args.item_ms}"], 32, True, None)]
    if args.checkpoint:
        setups.append(("captioner", [f"checkpoint={args.checkpoint}", "backend.device=cpu"], args.max_tokens, False, CAPTION_PROMPT))
    rows = []
    for name, overrides, max_tokens, check, prompt in setups:
        for max_batch in (args.max_batch, 1):
            with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
                proc, url = start([*overrides, f"batch.max_size={max_batch}", f"batch.wait_ms={args.wait_ms}", "batch.max_queue=4096"], Path(tmp))
                try:
                    r = asyncio.run(_load(url, args.requests, images, max_tokens, check, prompt))
                finally:
                    proc.terminate()
                    proc.wait(30)
            rows.append((name, max_batch, r))
            print(f"{name} max_batch={max_batch}: p50 {r['p50']:.0f} ms, p99 {r['p99']:.0f} ms, {r['rps']:.1f} req/s", file=sys.stderr)
    cmd = "python -m vlm.bench_serve " + shlex.join(argv)
    lines = [HEAD, "",
             f"command: `{cmd.strip()}`  ",
             f"machine: {cpu_name()}, {os.cpu_count()} cores visible, python {sys.version.split()[0]}, load average (1/5/15 min) {load()} at the end  ",
             f"load: {args.requests} chat requests at once from one `openai.AsyncOpenAI` client on loopback (after {min(16, args.requests)} warm-up requests), "
             f"one 64 px PNG data URL each, greedy; the server a `python -m vlm.serve` subprocess, `batch.wait_ms={args.wait_ms}`. "
             f"Echo backend: {args.call_ms:g} ms per backend call + {args.item_ms:g} ms per request in it (a stand-in for a model's "
             "forward pass), every answer checked against its own request (none mixed up)."
             + (f" Captioner: {args.checkpoint_label or Path(args.checkpoint).name}, {args.max_tokens} new tokens at most, CPU, every request "
                f"with the prompt \"{CAPTION_PROMPT}\" (the captioner takes one prompt per call, so requests with different "
                "prompts are answered in separate calls even when batched)." if args.checkpoint else ""),
             "",
             "| backend | batch.max_size | p50 latency, ms | p99 latency, ms | throughput, req/s |",
             "|---|---|---|---|---|"]
    for name, max_batch, r in rows:
        lines.append(f"| {name} | {max_batch} | {r['p50']:.0f} | {r['p99']:.0f} | {r['rps']:.1f} |")
    ratio = {name: r["rps"] for name, mb, r in rows if mb > 1}
    ratio = {name: ratio[name] / r["rps"] for name, mb, r in rows if mb == 1}
    lines += ["", "Throughput batched / unbatched: " + ", ".join(f"{x:.1f}x ({name})" for name, x in ratio.items()) + "."]
    if args.docs:
        docs = Path(args.docs)
        old = docs.read_text() if docs.exists() else "# vlm bench\n"
        common_io.write_text(docs, replace_section(old, lines))
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m vlm.bench_serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=200, help="requests sent at once per row")
    p.add_argument("--max-batch", type=int, default=16, help="batch.max_size of the batched server (the other has 1)")
    p.add_argument("--wait-ms", type=float, default=5, help="batch.wait_ms of both servers")
    p.add_argument("--call-ms", type=float, default=20, help="echo backend: sleep per backend call")
    p.add_argument("--item-ms", type=float, default=1, help="echo backend: sleep per request in a call")
    p.add_argument("--checkpoint", default=None, help="a captioner export: add its rows")
    p.add_argument("--checkpoint-label", default=None, help="what --checkpoint is, in the docs (default: its folder name)")
    p.add_argument("--max-tokens", type=int, default=16, help="captioner rows: max_tokens per request")
    p.add_argument("--docs", default=str(ROOT / "docs" / "bench" / "vlm.md"), help="file whose section is replaced ('' = none)")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if args.requests < 1 or args.max_batch < 2:
        raise SystemExit("error: --requests must be >= 1 and --max-batch >= 2 (1 is the unbatched row)")
    if args.checkpoint and not (Path(args.checkpoint) / "captioner.json").is_file():
        raise SystemExit(f"error: --checkpoint: {args.checkpoint}: not a captioner export (no captioner.json)")
    print("\n".join(run(args, argv)))


if __name__ == "__main__":
    main()
