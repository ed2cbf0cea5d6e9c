"""``python -m vlm.generate``: caption image files or a JSONL of records with a trained captioner, write JSONL.

    python -m vlm.generate --images a.png b.jpg --out captions.jsonl
    python -m vlm.generate --jsonl data/test.jsonl --out captions.jsonl [--captioner logs/.../captioner]
        [--temperature 0.7 --top-p 0.9 | --num-beams 3] [--max-new-tokens 32] [--no-cache]

Each output line: ``{id, image, caption}`` (+ ``brand``/``kind`` and ``names_brand`` for JSONL input).
Bad input (missing or corrupt image, bad JSONL line) stops with one line ``error: file:line: ...``, exit 2,
before anything is written; the output file is written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import io
from common.data.images import check_image
from common.data.records import require_text
from common.errors import UserError


def _args(argv=None):
    p = argparse.ArgumentParser(prog="python -m vlm.generate", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", help="image files")
    src.add_argument("--jsonl", help="JSONL with id, image (relative to --image-root or the file's folder)")
    p.add_argument("--image-root", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--captioner", default=None, help="export folder (default: newest under logs/vlm.train)")
    p.add_argument("--prompt", default=None)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--no-cache", action="store_true", help="generate without the KV cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    return p.parse_args(argv)


def _records(args) -> list[dict]:
    if args.images:
        return [{"id": Path(p).stem, "image": check_image(p)} for p in args.images]
    path = Path(args.jsonl)
    root = Path(args.image_root) if args.image_root else path.parent

    def validate(raw: dict) -> dict:
        image = require_text(raw.get("image"), "image")
        full = Path(image) if Path(image).is_absolute() else root / image
        check_image(full)
        out = {"id": str(raw.get("id", image)), "image": str(full)}
        for k in ("brand", "kind"):
            if k in raw:
                out[k] = raw[k]
        return out

    from common.data.records import read_json_records

    return read_json_records(path, validate)  # JSONL or a LLaVA .json array; no caption needed


def main(argv=None) -> int:
    from tqdm.auto import tqdm

    args = _args(argv)
    try:
        io.check_writable(args.out, "--out", {"--jsonl": args.jsonl, **{f"--images[{i}]": p for i, p in enumerate(args.images or [])}})
        records = _records(args)
        from vlm.captioner import Captioner

        cap = Captioner.load(args.captioner)
        captions = []
        bs = args.batch_size
        for i in tqdm(range(0, len(records), bs), desc="captioning", unit="batch"):
            chunk = [r["image"] for r in records[i : i + bs]]
            captions += cap.caption(chunk, prompt=args.prompt, temperature=args.temperature, top_p=args.top_p,
                                    max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                                    use_cache=not args.no_cache, seed=args.seed, batch_size=bs)
        matcher = None
        if cap.brands:
            from common.metrics.brand import BrandMatcher

            matcher = BrandMatcher(cap.brands, cap.info.get("aliases") or {})
        rows = []
        for r, c in zip(records, captions, strict=True):
            row = {**r, "caption": c}
            if matcher is not None:
                row["brands_named"] = sorted(matcher.names(c))
            rows.append(row)
        io.write_jsonl(args.out, rows)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(rows)} captions to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
