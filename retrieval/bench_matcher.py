"""``python -m retrieval.bench_matcher``: the ``+exp=matcher`` pair matcher on the DeepMatcher data sets next to
Ditto's published pair F1, as a section of ``docs/bench/retrieval.md`` (the retrieval rows there stay).

Each data set is one ``python -m retrieval.train +exp=matcher data.path=<shared>/<name> <overrides>`` run in a
fresh interpreter, exactly as a user runs it (the command is in the table); its wall time includes start-up,
training, the per-epoch validation and the test pass. Pair F1 is on Ditto's DeepMatcher test split, at the
threshold tuned on the validation split.

    python -m retrieval.bench_matcher                                  # both data sets, the exp's defaults
    python -m retrieval.bench_matcher --datasets abt_buy --set model.reranker.max_length=128
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from common.bench import load, machine, write_section

# Li et al. 2020, "Deep Entity Matching with Pre-Trained Language Models", Table 4 (RoBERTa, DeepMatcher splits)
DITTO = {"abt_buy": 89.33, "amazon_walmart": 86.76}
BEGIN, END = "<!-- matcher rows: python -m retrieval.bench_matcher -->", "<!-- end matcher rows -->"


def run_one(name: str, folder: Path, overrides: list[str], root: Path) -> dict:
    run_dir = root / name
    cmd = [sys.executable, "-m", "retrieval.train", "+exp=matcher", f"data.path={folder}", *overrides, "logger=none",
           "callbacks.progress_bar=null", f"hydra.run.dir={run_dir}", f"paths.log_dir={root / 'logs'}"]
    shown = " ".join(["python -m retrieval.train +exp=matcher", f"data.path=../shared/datasets/{name}", *overrides])
    print(f"[bench matcher] {shown}", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"error: {name}: the matcher run failed (exit {done.returncode}): "
                         f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
    m = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {"name": name, "command": shown, "wall": wall, "load": load(), **m}


def section(rows: list[dict], started: str) -> list[str]:
    lines = ["## Pair matcher (`+exp=matcher`, Ditto-style cross-encoder) vs Ditto", "",
             f"machine at start: {started}", "",
             "| data set | command | wall s | load at end | val F1 | test P | test R | test F1 | Ditto F1 | gap |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        anchor = DITTO.get(r["name"])
        f1 = 100 * r["test/pair_f1"]
        lines.append(f"| {r['name']} | `{r['command']}` | {r['wall']:.0f} | {r['load']} | {100 * r['val/pair_f1']:.1f} | "
                     f"{100 * r['test/pair_precision']:.1f} | {100 * r['test/pair_recall']:.1f} | {f1:.1f} | "
                     f"{anchor if anchor else '-'} | {f'{f1 - anchor:+.1f}' if anchor else '-'} |")
    return [*lines, "", "Ditto: RoBERTa-base, 256 tokens, up to 40 epochs on a GPU, with its domain-knowledge injection; the "
            "matcher here is MiniLM-L6 (the pretrained encoder that installs offline) within a CPU budget."]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"))
    p.add_argument("--datasets", default="abt_buy,amazon_walmart")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="a Hydra override for every run")
    p.add_argument("--root", default="logs/retrieval.bench_matcher")
    p.add_argument("--doc", default="docs/bench/retrieval.md")
    args = p.parse_args(argv)
    started = machine()
    rows = []
    for name in [d for d in args.datasets.split(",") if d]:
        folder = Path(args.shared) / name
        if not folder.is_dir():
            print(f"[bench matcher] {name}: skipped ({folder} not found)")
            continue
        rows.append(run_one(name, folder, list(args.overrides), Path(args.root)))
        write_section(args.doc, BEGIN, END, section(rows, started))  # rewritten after each data set
    print("\n".join(section(rows, started)))
    print(f"written to {args.doc} ({shlex.join(['python', '-m', 'retrieval.bench_matcher', *(argv or sys.argv[1:])])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
