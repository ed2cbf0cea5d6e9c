"""``python -m textcls.overhead`` (``make bench-overhead``): what the framework itself costs.

The same composed config, data module, model and loss run two ways, each as a whole process:

* **framework**: ``python -m textcls.train data.synth.n=N trainer.max_epochs=E callbacks.early_stopping=null``
  with MLflow on (a throw-away sqlite store), checkpoints, threshold tuning, metrics and the end-of-run report;
* **bare loop**: ``python -m textcls.overhead --bare``: compose the config, ``build`` it, then a plain torch
  loop (AdamW, train; a val forward pass each epoch; one test pass), what a new user would write by hand.

Both run at ``E1`` and ``E2`` epochs in paired rounds (bare and framework back to back, the order alternating).
Per round, the per-epoch cost is ``(t(E2) - t(E1)) / (E2 - E1)`` and the fixed cost ``t(E1) - E1 * per_epoch``;
the table gives the medians and the framework/bare ratios. Writes ``docs/bench/overhead.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import io
from common.bench import machine
from textcls.build import build

CONF = Path(__file__).resolve().parents[1] / "conf" / "textcls"


def bare(n: int, epochs: int) -> None:
    """The hand-written loop over exactly what ``python -m textcls.train`` builds."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import common.config  # noqa: F401  (resolvers)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"data.synth.n={n}", "logger=none"])
    torch.manual_seed(cfg.seed)
    module, dm = build(cfg)
    opt = instantiate(cfg.optim)(module.parameters())
    for _ in range(epochs):
        module.train()
        for batch in dm.train_dataloader():
            loss = module._loss(module(batch["ids"]), batch["target"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        module.eval()
        with torch.no_grad():
            val = [module._loss(module(b["ids"]), b["target"]) for b in dm.val_dataloader()]
        print(f"val loss {float(torch.stack(val).mean()):.4f}")
    with torch.no_grad():
        probs = torch.cat([module.probs(module(b["ids"])) for b in dm.test_dataloader()])
    print(f"test rows {len(probs)}")


def _timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def measure(n: int, e1: int, e2: int, rounds: int, extra: list[str] = ()) -> dict[str, list[dict]]:
    tmp = Path(tempfile.mkdtemp(prefix="overhead_"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlruns.db", "MLFLOW_ARTIFACT_ROOT": str(tmp / "artifacts")}
    py = sys.executable

    def command(kind: str, epochs: int, run: str) -> list[str]:
        if kind == "bare":
            return [py, "-m", "textcls.overhead", "--bare", "--n", str(n), "--epochs", str(epochs)]
        return [py, "-m", "textcls.train", f"data.synth.n={n}", f"trainer.max_epochs={epochs}",
                "callbacks.early_stopping=null", f"paths.log_dir={tmp}", f"hydra.run.dir={tmp}/{run}", *extra]

    out: dict[str, list[dict]] = {"bare": [], "framework": []}
    for r in range(rounds):
        order = ("bare", "framework") if r % 2 == 0 else ("framework", "bare")
        for kind in order:
            t1 = _timed(command(kind, e1, f"{r}_{e1}"), env)
            t2 = _timed(command(kind, e2, f"{r}_{e2}"), env)
            per_epoch = (t2 - t1) / (e2 - e1)
            out[kind].append({"t1": t1, "t2": t2, "per_epoch": per_epoch, "fixed": t1 - e1 * per_epoch})
            print(f"round {r} {kind}: {e1} ep {t1:.1f} s, {e2} ep {t2:.1f} s", file=sys.stderr)
    return out


def table(res: dict[str, list[dict]], n: int, e1: int, e2: int, argv: list[str], wall: float) -> str:
    med = {k: {m: statistics.median(r[m] for r in rows) for m in ("t1", "t2", "per_epoch", "fixed")} for k, rows in res.items()}
    ratios = [f["per_epoch"] / b["per_epoch"] for f, b in zip(res["framework"], res["bare"], strict=True)]
    fixed = [f["fixed"] - b["fixed"] for f, b in zip(res["framework"], res["bare"], strict=True)]
    b, f = med["bare"], med["framework"]
    rows = [
        f"| whole process, {e1} epochs, s | {b['t1']:.1f} | {f['t1']:.1f} | {f['t1'] / b['t1']:.2f}x |",
        f"| whole process, {e2} epochs, s | {b['t2']:.1f} | {f['t2']:.1f} | {f['t2'] / b['t2']:.2f}x |",
        f"| per epoch, s | {b['per_epoch']:.2f} | {f['per_epoch']:.2f} | {statistics.median(ratios):.2f}x "
        f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)}) |",
        f"| fixed (start-up + end), s | {b['fixed']:.1f} | {f['fixed']:.1f} | +{statistics.median(fixed):.1f} s "
        f"(rounds: {', '.join(f'{x:+.1f}' for x in fixed)}) |",
    ]
    return "\n".join([
        "# Framework vs bare loop (textcls, synthetic car news)", "",
        f"command: `python -m textcls.overhead {' '.join(argv)}`  ",
        f"machine: {machine()}  ",
        f"data.synth.n={n}, {len(res['bare'])} paired rounds, medians; total wall time {wall:.0f} s", "",
        "| figure | bare torch loop | python -m textcls.train | framework / bare |", "|---|---|---|---|",
        *rows, "",
        "Per epoch = (t(E2) - t(E1)) / (E2 - E1) within a round; fixed = t(E1) - E1 x per epoch. The framework "
        "run also tunes per-label thresholds, computes the metrics each epoch, checkpoints, logs to MLflow and "
        "writes the end-of-run report; the bare loop does none of that.", "",
    ])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bare", action="store_true", help="run the bare loop once (what the bench times)")
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=3, help="with --bare")
    p.add_argument("--e1", type=int, default=3)
    p.add_argument("--e2", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--framework-override", action="append", default=[], metavar="KEY=VALUE",
                   help="add an override to the framework run (what does a callback cost?); repeatable")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "bench" / "overhead.md"))
    args = p.parse_args(argv)
    if args.bare:
        return bare(args.n, args.epochs)
    start = time.perf_counter()
    res = measure(args.n, args.e1, args.e2, args.rounds, args.framework_override)
    md = table(res, args.n, args.e1, args.e2, argv if argv is not None else sys.argv[1:], time.perf_counter() - start)
    io.write_text(Path(args.out), md)
    print(md)


if __name__ == "__main__":
    main()
