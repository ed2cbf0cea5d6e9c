"""``python -m retrieval.bench_matcher``: the ``+exp=matcher`` pair matcher on the DeepMatcher data sets next to
Ditto's published pair F1, as a section of ``docs/bench/retrieval.md`` (the retrieval rows there stay).

Each data set is one ``python -m retrieval.train +exp=matcher data.path=<shared>/<name> <overrides>`` run in a
fresh interpreter, exactly as a user runs it (the command is in the table); its wall time includes start-up,
training, the per-epoch validation and the test pass. Pair F1 is on Ditto's DeepMatcher test split, at the
threshold tuned on the validation split.

    python -m retrieval.bench_matcher                          # both data sets, the CPU budget below
    python -m retrieval.bench_matcher --datasets abt_buy --set trainer.max_epochs=5

The CPU budget (``CPU``, always in the table's command; ``--set`` adds to it): 128 tokens a pair instead of the
exp's 256, which halves a step here (2.0 vs 5.0 s a batch of 32 on two idle cores) and so buys twice the epochs
within the hour. Each run's log is ``<root>/<name>.log``; its per-epoch validation F1 is in the table.
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
CPU = ["model.reranker.max_length=128", "model.reranker.summarise=62"]
BEGIN, END = "<!-- matcher rows: python -m retrieval.bench_matcher -->", "<!-- end matcher rows -->"


def run_one(name: str, folder: Path, overrides: list[str], root: Path) -> dict:
    run_dir = root / name
    cmd = [sys.executable, "-m", "retrieval.train", "+exp=matcher", f"data.path={folder}", *overrides, "logger=csv",
           "callbacks.progress_bar=null", f"hydra.run.dir={run_dir}", f"paths.log_dir={root / 'logs'}"]
    shown = " ".join(["python -m retrieval.train +exp=matcher", f"data.path=../shared/datasets/{name}", *overrides])
    log = root / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[bench matcher] {shown}  (log: {log})", flush=True)
    t0 = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        last = (log.read_text(encoding="utf-8").strip().splitlines() or ["?"])[-1]
        raise SystemExit(f"error: {name}: the matcher run failed (exit {done.returncode}, {log}): {last}")
    m = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    row = {"name": name, "command": shown, "wall": wall, "load": load(), "val_curve": val_curve(run_dir), **m}
    (root / f"{name}.json").write_text(json.dumps(row, indent=1), encoding="utf-8")  # --render rereads it
    return row


def val_curve(run_dir: Path) -> list[float]:
    """Validation pair F1 after each epoch, from the run's CSV log."""
    import csv

    rows = [r for f in sorted(run_dir.glob("csv/version_*/metrics.csv")) for r in csv.DictReader(f.open(encoding="utf-8"))]
    return [float(r["val/pair_f1"]) for r in rows if r.get("val/pair_f1")]


def section(rows: list[dict], started: str) -> list[str]:
    lines = ["## Pair matcher (`+exp=matcher`, Ditto-style cross-encoder) vs Ditto", "",
             f"machine at start: {started}", "",
             "| data set | command | wall s | load at end | val F1 by epoch | val F1 | test P | test R | test F1 | Ditto F1 | gap |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        anchor = DITTO.get(r["name"])
        f1 = 100 * r["test/pair_f1"]
        curve = r.get("val_curve") or [r["val/pair_f1"]]
        shown = " ".join(f"{100 * v:.0f}" for v in curve)
        # the tested checkpoint is the best epoch's (ModelCheckpoint on val/pair_f1, max); metrics.json's val
        # figure is the last epoch's
        lines.append(f"| {r['name']} | `{r['command']}` | {r['wall']:.0f} | {r['load']} | {shown} | {100 * max(curve):.1f} | "
                     f"{100 * r['test/pair_precision']:.1f} | {100 * r['test/pair_recall']:.1f} | {f1:.1f} | "
                     f"{anchor if anchor else '-'} | {f'{f1 - anchor:+.1f}' if anchor else '-'} |")
    return [*lines, "", "val F1 is the best epoch's, whose checkpoint and threshold the test uses. Ditto: RoBERTa-base (125M), 256 tokens, up to 40 "
            "epochs on a GPU, with its domain-knowledge injection; the matcher here is MiniLM-L6 (22M, the pretrained "
            "encoder that installs offline) within an hour of this CPU."]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"))
    p.add_argument("--datasets", default="abt_buy,amazon_walmart")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="a Hydra override for every run")
    p.add_argument("--root", default="logs/retrieval.bench_matcher")
    p.add_argument("--doc", default="docs/bench/retrieval.md")
    p.add_argument("--render", metavar="MACHINE", help="rewrite the section from the rows an earlier run left in "
                   "--root (<name>.json), without training; MACHINE: that run's machine line")
    args = p.parse_args(argv)
    if args.render:
        rows = [json.loads((Path(args.root) / f"{d}.json").read_text(encoding="utf-8"))
                for d in args.datasets.split(",") if (Path(args.root) / f"{d}.json").is_file()]
        write_section(args.doc, BEGIN, END, section(rows, args.render))
        print("\n".join(section(rows, args.render)))
        return 0
    started = machine()
    rows = []
    for name in [d for d in args.datasets.split(",") if d]:
        folder = Path(args.shared) / name
        if not folder.is_dir():
            print(f"[bench matcher] {name}: skipped ({folder} not found)")
            continue
        rows.append(run_one(name, folder, [*CPU, *args.overrides], Path(args.root)))
        write_section(args.doc, BEGIN, END, section(rows, started))  # rewritten after each data set
    print("\n".join(section(rows, started)))
    print(f"written to {args.doc} ({shlex.join(['python', '-m', 'retrieval.bench_matcher', *(argv or sys.argv[1:])])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
