"""``python -m textcls.bench`` (``make bench-textcls``): one run, one Markdown table per question.

1. Toutiao (``../shared/datasets/toutiao``, read in place, deterministic 80/10/10 split stratified by class):
   binary 汽车 vs other F1 and 15-class accuracy / macro-F1 for TextCNN (char, word), the BERT-class model
   (tiny, from scratch), fastText and TF-IDF+LR, with train and predict wall time. Every model is scored on
   the same held-out test part; binary thresholds are tuned on the validation part for every model alike.
2. The synthetic long tail: per-tag test F1 of the hierarchical TextCNN with plain BCE at threshold 0.5
   versus pos_weight (auto) + per-label thresholds tuned on validation.

Writes ``reports/textcls_bench.md`` (``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import io, run
from common.bench import machine
from common.compose import compose_run
from common.config import project_root
from common.metrics.classification import per_label, prf
from common.metrics.intervals import bootstrap_interval, paired_difference
from textcls import decoding, scores
from textcls.baselines import FastTextBaseline, TfidfLRBaseline
from textcls.build import SCHEMAS, build
from textcls.inference import combine, load_checkpoint
from textcls.pretrain import pretrain
from textcls.taxonomy import SUBTAG_SHARES

CONF = Path(__file__).resolve().parents[1] / "conf" / "textcls"
_count = itertools.count()


def compose_train_cfg(overrides: list[str], log_dir: Path, name: str = "train"):
    """The composed primary config ``name`` with its own run dir, exactly as the CLI builds it."""
    cfg = compose_run(CONF, [f"paths.log_dir={log_dir}", *overrides], log_dir / "bench" / f"{next(_count):02d}", name)
    return cfg


def run_neural(overrides: list[str], log_dir: Path) -> dict:
    """Train with ``common.run.train`` (best checkpoint by validation), then predict the val and test parts
    (prediction of the test part timed)."""

    cfg = compose_train_cfg(["logger=none", "callbacks.progress_bar=null", *overrides], log_dir)
    t0 = time.perf_counter()
    run.train(cfg, build=build, schemas=SCHEMAS)
    train_s = time.perf_counter() - t0
    best = next((Path(cfg.paths.output_dir) / "checkpoints").glob("epoch_*.ckpt"))
    model = load_checkpoint(best)
    _, dm = build(cfg)
    _, val_probs, val_pred, val_targets = combine([model], dm.val.docs)
    t0 = time.perf_counter()
    space, probs, pred, targets = combine([model], dm.test.docs)
    predict_s = time.perf_counter() - t0
    return {
        "space": space, "probs": probs, "pred": pred, "targets": targets, "train_s": train_s, "predict_s": predict_s,
        "val": {"probs": val_probs, "pred": val_pred, "targets": val_targets},
    }


def run_baseline(kind: str, overrides: list[str], log_dir: Path) -> dict:
    cfg = compose_train_cfg(["logger=none", *overrides], log_dir)
    _, dm = build(cfg)
    space = dm.space
    model = FastTextBaseline(space) if kind == "fasttext" else TfidfLRBaseline(space)
    t0 = time.perf_counter()
    model.fit(dm.train.docs, dm.train.targets.numpy())
    train_s = time.perf_counter() - t0
    val_probs, val_targets = model.predict_proba(dm.val.docs), dm.val.targets.numpy()
    thr = decoding.tune_thresholds(val_probs, val_targets) if space.task != "multiclass" else 0.5
    t0 = time.perf_counter()
    probs = model.predict_proba(dm.test.docs)
    pred = decoding.decode(probs, space.task, thr, parents=space.parents)
    predict_s = time.perf_counter() - t0
    return {
        "space": space, "probs": probs, "pred": pred, "targets": dm.test.targets.numpy(), "train_s": train_s,
        "predict_s": predict_s,
        "val": {"probs": val_probs, "pred": decoding.decode(val_probs, space.task, thr, parents=space.parents), "targets": val_targets},
    }


def mean_ensemble(members: list[dict]) -> dict:
    """``combine=mean`` of several results on the same split: mean probabilities; binary / multi-label thresholds
    tuned on the mean validation probabilities (as every member's were), multiclass by arg-max."""
    space = members[0]["space"]
    val_probs = np.mean([m["val"]["probs"] for m in members], axis=0)
    val_targets = members[0]["val"]["targets"]
    thr = decoding.tune_thresholds(val_probs, val_targets) if space.task != "multiclass" else 0.5
    probs = np.mean([m["probs"] for m in members], axis=0)
    return {
        "space": space, "probs": probs, "pred": decoding.decode(probs, space.task, thr, parents=space.parents),
        "targets": members[0]["targets"], "train_s": sum(m["train_s"] for m in members),
        "predict_s": sum(m["predict_s"] for m in members),
        "val": {"probs": val_probs, "pred": decoding.decode(val_probs, space.task, thr, parents=space.parents), "targets": val_targets},
    }


def _metrics(r: dict) -> dict:
    s = r["space"]
    return scores.metrics(r["targets"], r["pred"], s.task, s.labels, s.parents)


# The headline figure of each Toutiao task, from one prediction matrix and its gold rows: positive-class F1
# of the one-column car task, accuracy of the 15-class task. ``rows`` index the test part (bootstrap).
HEADLINE = {"toutiao_car": "F1", "toutiao_15": "accuracy"}


def headline(task: str, targets: np.ndarray, pred: np.ndarray) -> float:
    if task == "toutiao_car":
        return prf(targets, pred).f1
    return float((targets.argmax(1) == pred.argmax(1)).mean())


def with_intervals(task: str, r: dict) -> dict:
    """The headline figure on test with its bootstrap 95 % interval, and on val (which picks the best recipe)."""

    t, p = r["targets"], r["pred"]
    ci = bootstrap_interval(lambda rows: headline(task, t[rows], p[rows]), len(t))
    return {**_metrics(r), "ci": ci, "val": headline(task, r["val"]["targets"], r["val"]["pred"]),
            "train_s": r["train_s"], "predict_s": r["predict_s"]}


def compare(task: str, a: dict, b: dict) -> str:
    """``a / b`` of the headline figure, and the paired-bootstrap interval of ``a - b``."""

    t = a["targets"]
    diff = paired_difference(lambda pred, rows: headline(task, t[rows], pred), a["pred"], b["pred"])
    va, vb = headline(task, t, a["pred"]), headline(task, t, b["pred"])
    verdict = "better" if diff.low > 0 else "worse" if diff.high < 0 else "not different at 95 %"
    return f"{va:.4f} / {vb:.4f} = {va / vb:.3f}x; difference {diff.value:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}] (paired bootstrap): {verdict}"


TUNED_TEXTCNN: list[str] = ["model.kernel_sizes=[1,2,3,4]", "model.embedding_dim=128", "trainer.max_epochs=15"]
TOUTIAO_MODELS = {
    "cnn_char": ("TextCNN char (7/8/9 x 128)", "neural", []),
    "cnn_word": ("TextCNN word (jieba, 2/3/4 x 128)", "neural", ["data.tokenizer=word", "model.kernel_sizes=[2,3,4]"]),
    "bert": ("BERT-class (tiny, from scratch)", "neural", ["model=bert", "optim.lr=0.0005"]),
    # the same encoder after masked-LM pre-training on the training part's text (python -m textcls.pretrain)
    "bert_dapt": ("BERT-class (tiny, masked-LM pre-trained on train text)", "dapt", ["model=bert", "optim.lr=0.0005"]),
    # picked on val accuracy of toutiao_15 among the default, this one and 4 trials of
    # `hparams_search=toutiao_textcnn` (none of which beat it); used for both tasks
    "cnn_char_tuned": ("TextCNN char, kernels 1-4, emb 128, 15 epochs", "neural", TUNED_TEXTCNN),
    "fasttext": ("fastText (word+bigrams, 25 ep)", "fasttext", ["data.tokenizer=word"]),
    "tfidf": ("TF-IDF char 1-3 + LR", "tfidf", []),
}


NEURAL = ("cnn_char", "cnn_word", "bert", "bert_dapt", "cnn_char_tuned")
ENSEMBLE = "mean(best neural on val, TF-IDF+LR)"


def pretrained_encoder(log_dir: Path, data: list[str], epochs: int, notes: list[str]) -> Path:
    """Masked-LM pre-training on the training part of the Toutiao split (the same part for both tasks: the split
    is stratified by class either way), once per bench run; its cost goes into ``notes``."""
    out = log_dir / "dapt_bert"
    if not out.exists():
        print(f"[bench] masked-LM pre-training, {epochs} epochs", file=sys.stderr, flush=True)
        cfg = compose_train_cfg(["+exp=toutiao_15", *data, f"pretrain.out={out}", f"pretrain.epochs={epochs}",
                                 "callbacks.progress_bar=null", "logger=none"], log_dir, name="pretrain")
        t0 = time.perf_counter()
        val_loss = pretrain(cfg)
        notes.append(f"- {TOUTIAO_MODELS['bert_dapt'][0]}: masked-LM pre-training ({epochs} epochs on the training part's "
                     f"text, shared by both tasks) took {time.perf_counter() - t0:.0f} s, not counted in the row's train s; "
                     f"its validation MLM loss is {val_loss:.3f} nats per masked token.")
    return out


def toutiao_section(
    epochs: int, log_dir: Path, keys: list[str], tasks: list[str], data: list[str], dapt_epochs: int = 20
) -> tuple[str, dict]:
    """One row per model (and the mean ensemble), then the lines that compare recipes; the best neural recipe
    of each task is picked on its validation figure, never on test."""
    runs: dict[str, dict[str, dict]] = {exp: {} for exp in tasks}
    notes: list[str] = []
    for key in keys:
        name, kind, extra = TOUTIAO_MODELS[key]
        for exp in tasks:
            overrides = [f"+exp={exp}", f"trainer.max_epochs={epochs}", *data, *extra]
            if kind == "dapt":
                overrides.append(f"model.name_or_path={pretrained_encoder(log_dir, data, dapt_epochs, notes)}")
            print(f"[bench] {name} / {exp}", file=sys.stderr, flush=True)
            neural = kind in ("neural", "dapt")
            runs[exp][key] = run_neural(overrides, log_dir) if neural else run_baseline(kind, overrides, log_dir)
            m = with_intervals(exp, runs[exp][key])
            print(f"[bench] {name} / {exp}: test {HEADLINE[exp]} {m['ci']}, val {m['val']:.4f}, "
                  f"train {m['train_s']:.0f} s", file=sys.stderr, flush=True)
    best: dict[str, str] = {}
    for exp in tasks:
        neural = {k: r for k, r in runs[exp].items() if k in NEURAL}
        if neural:
            best[exp] = max(neural, key=lambda k: headline(exp, neural[k]["val"]["targets"], neural[k]["val"]["pred"]))
            if "tfidf" in runs[exp]:
                runs[exp]["ensemble"] = mean_ensemble([runs[exp][best[exp]], runs[exp]["tfidf"]])
    found = {exp: {k: with_intervals(exp, r) for k, r in runs[exp].items()} for exp in tasks}
    nan = {"ci": None, "val": float("nan"), "macro_f1": float("nan"), "train_s": float("nan"), "predict_s": float("nan")}
    rows = []
    for key in [*keys, "ensemble"]:
        cells = []
        for exp in ("toutiao_car", "toutiao_15"):
            m = found.get(exp, {}).get(key, nan)
            figure = str(m["ci"]) if m["ci"] else "-"
            extra_cell = [f"{m['macro_f1']:.4f}" if m["ci"] else "-"] if exp == "toutiao_15" else []
            cells += [figure, *extra_cell, f"{m['val']:.4f}" if m["ci"] else "-", f"{m['train_s']:.0f}" if m["ci"] else "-",
                      f"{m['predict_s']:.2f}" if m["ci"] else "-"]
        if any(c != "-" for c in cells):
            label = TOUTIAO_MODELS[key][0] if key in TOUTIAO_MODELS else ENSEMBLE
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
    head = (
        "| model | car-vs-other F1 [95% CI] | val F1 | train s | predict s "
        "| 15-class acc [95% CI] | 15-class macro-F1 | val acc | train s | predict s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for exp in tasks:
        task = "car-vs-other F1" if exp == "toutiao_car" else "15-class accuracy"
        r = runs[exp]
        if exp in best and "tfidf" in r:
            lines.append(f"- {task}, best in-repo neural recipe ({TOUTIAO_MODELS[best[exp]][0]}, picked on val) / TF-IDF+LR: "
                         + compare(exp, r[best[exp]], r["tfidf"]))
            lines.append(f"- {task}, {ENSEMBLE} / TF-IDF+LR: " + compare(exp, r["ensemble"], r["tfidf"]))
        cnns = [k for k in r if k.startswith("cnn_")]
        if cnns and "fasttext" in r:
            cnn = max(cnns, key=lambda k: headline(exp, r[k]["val"]["targets"], r[k]["val"]["pred"]))
            lines.append(f"- {task}, best TextCNN ({TOUTIAO_MODELS[cnn][0]}, picked on val) / fastText: "
                         + compare(exp, r[cnn], r["fasttext"]))
    text = head + "\n".join(rows) + "\n"
    lines += notes
    if lines:
        text += "\n" + "\n".join(lines) + "\n"
    return text, found


def synthetic_section(epochs: int, log_dir: Path) -> tuple[str, dict]:
    variants = {
        "plain BCE, thr 0.5": ["module.pos_weight=null", "module.tune_thresholds=false"],
        "pos_weight + tuned thr": ["module.pos_weight=auto", "module.tune_thresholds=true"],
    }
    per = {}
    for name, extra in variants.items():
        print(f"[bench] synthetic / {name}", file=sys.stderr, flush=True)
        r = run_neural([f"trainer.max_epochs={epochs}", *extra], log_dir)

        per[name] = {row.label: row for row in per_label(r["targets"], r["pred"], r["space"].labels)}
        per[name]["_metrics"] = _metrics(r)
        f1s = ", ".join(f"{row.label.split('--')[-1]} {row.f1:.2f}" for row in per[name].values() if hasattr(row, "f1"))
        print(f"[bench] synthetic / {name}: {f1s}", file=sys.stderr, flush=True)
    names = list(variants)
    head = "| tag | share | test positives | " + " | ".join(f"F1 {n}" for n in names) + " |\n|---|---:|---:|" + "---:|" * len(names) + "\n"
    rows = []
    for label in per[names[0]]:
        if label.startswith("_"):
            continue
        tag = label.split("--")[-1]
        share = SUBTAG_SHARES.get(tag)
        cells = " | ".join(f"{per[n][label].f1:.3f}" for n in names)
        rows.append(f"| {label} | {'%.2f%%' % (100 * share) if share else 'gate'} | {per[names[0]][label].standard} | {cells} |")
    summary = " | ".join(
        f"{n}: micro-F1 {per[n]['_metrics']['micro_f1']:.3f}, macro-F1 {per[n]['_metrics']['macro_f1']:.3f}" for n in names
    )
    return head + "\n".join(rows) + f"\n\n{summary}\n", per


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="textcls benchmark tables (Toutiao + synthetic long tail)")
    ap.add_argument("--out", default=str(project_root() / "reports" / "textcls_bench.md"))
    ap.add_argument("--toutiao-epochs", type=int, default=8)
    ap.add_argument("--synth-epochs", type=int, default=6)
    ap.add_argument("--dapt-epochs", type=int, default=20, help="masked-LM pre-training epochs of the bert_dapt row")
    ap.add_argument("--skip-toutiao", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--tasks", default="toutiao_car,toutiao_15")
    ap.add_argument("--train-file", help="Toutiao _!_ file to train on (default: ../shared/datasets/toutiao)")
    ap.add_argument("--val-file", help="a separate _!_ validation file (default: cut from the training file)")
    ap.add_argument("--test-file", help="a separate _!_ test file every model is scored on (default: cut from the training file)")
    ap.add_argument("--models", default=",".join(TOUTIAO_MODELS), help=f"Toutiao models, from {','.join(TOUTIAO_MODELS)}")
    args = ap.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    t0 = time.perf_counter()
    parts = [
        "# textcls bench", "",
        f"command: `python -m textcls.bench {shlex.join(argv if argv is not None else sys.argv[1:])}`  ",
        f"machine: {machine()}  ", f"started: {started}", "",
    ]
    with tempfile.TemporaryDirectory(prefix="textcls_bench_") as tmp:
        log_dir = Path(tmp)
        toutiao = Path(args.train_file) if args.train_file else (
            project_root().parent / "shared" / "datasets" / "toutiao" / "toutiao_cat_data.dev.txt"
        )
        if not args.skip_toutiao:
            if toutiao.is_file():
                keys = [k.strip() for k in args.models.split(",") if k.strip()]
                unknown = [k for k in keys if k not in TOUTIAO_MODELS]
                if unknown:
                    ap.error(f"--models: unknown {unknown}; choose from {list(TOUTIAO_MODELS)}")
                data = [f"data.train_file={toutiao}"]
                for part in ("val", "test"):
                    if path := getattr(args, f"{part}_file"):
                        if not Path(path).is_file():
                            ap.error(f"--{part}-file: {path}: no such file")
                        data.append(f"data.{part}_file={Path(path).resolve()}")
                if args.test_file:
                    where = (f"trained on {toutiao} ({'val: ' + args.val_file if args.val_file else 'split 8:1 train/val'}), "
                             f"tested on {args.test_file}")
                else:
                    where = f"{toutiao}, split 80/10/10 stratified, seed 0"
                table, _ = toutiao_section(args.toutiao_epochs, log_dir, keys, args.tasks.split(","), data, args.dapt_epochs)
                parts += [
                    f"## Toutiao ({where}; neural: {args.toutiao_epochs} epochs, best checkpoint on val)", "",
                    "Car-vs-other F1 is the positive class (news_car) at the threshold tuned on val; every figure is on the "
                    "test part with a bootstrap 95 % interval (1000 resamples of the test rows). \"val\" columns are the same "
                    "figure on the validation part, which alone picks the best recipe.", "",
                    table,
                ]
            else:
                parts += [f"## Toutiao: skipped ({toutiao} not found)", ""]
        if not args.skip_synthetic:
            table, _ = synthetic_section(args.synth_epochs, log_dir)
            parts += [
                f"## Synthetic long tail (12,000 articles, 80/10/10; hierarchical TextCNN, {args.synth_epochs} epochs): per-tag test F1",
                "", table, "",
            ]
    parts.append(f"total wall time: {time.perf_counter() - t0:.0f} s; load average at the end: "
                 + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + " (the wall times above are only comparable within one run)")
    text = "\n".join(parts) + "\n"
    io.write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
