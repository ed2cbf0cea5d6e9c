"""Evaluation output: per-label P/R/F1 table, the NeuralClassifier line, confusion matrices, PR curves and a
predictions file, written atomically to a folder and uploaded to the MLflow run(s) among ``loggers``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common import io, tracking
from common.metrics import classification as C
from textcls import scores
from textcls.data import LabelSpace
from textcls.synth import Doc


def _cjk_font() -> str | None:
    from matplotlib import font_manager

    for f in font_manager.fontManager.ttflist:
        if any(k in f.name for k in ("CJK", "WenQuanYi", "SimHei", "Heiti", "Source Han", "Microsoft YaHei")):
            return f.name
    return None


def plot_names(space: LabelSpace) -> list[str]:
    """Label names for figures: the names when a CJK font is installed, else ``L0``, ``L1``, ... (see report.md)."""
    if _cjk_font():
        return [label.split("--")[-1] for label in space.labels]
    return [f"L{j}" for j in range(len(space.labels))]


def _setup():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    font = _cjk_font()
    if font:
        plt.rcParams["font.sans-serif"] = [font, "DejaVu Sans"]
        plt.rcParams["axes.unicode_minus"] = False
    return plt


def prediction_rows(docs: Sequence[Doc], probs: np.ndarray, pred: np.ndarray, space: LabelSpace, gold: np.ndarray | None = None):
    for i, doc in enumerate(docs):
        row = {
            "text": doc.text,
            "labels": space.decode_row(pred[i]),
            "scores": {label: round(float(p), 6) for label, p in zip(space.labels, probs[i], strict=True)},
        }
        if gold is not None:
            row["gold"] = space.decode_row(gold[i].astype(int))
        yield row


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, space: LabelSpace):
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    plt = _setup()
    names = plot_names(space)
    if space.task == "multiclass":
        cm = confusion_matrix(y_true.argmax(1), y_pred.argmax(1), labels=range(len(space.labels)))
        fig, ax = plt.subplots(figsize=(1 + 0.6 * len(space.labels), 1 + 0.6 * len(space.labels)))
        ConfusionMatrixDisplay(cm, display_labels=names).plot(ax=ax, xticks_rotation=90, colorbar=False)
        fig.tight_layout()
        return fig
    mcm = C.confusion(y_true, y_pred)  # one 2x2 per column, a one-column (binary) matrix included
    n = len(space.labels)
    cols = min(n, 5)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for j, ax in enumerate(axes.flat):
        if j >= n:
            ax.axis("off")
            continue
        ConfusionMatrixDisplay(mcm[j], display_labels=["0", "1"]).plot(ax=ax, colorbar=False)
        ax.set_title(names[j], fontsize=9)
    fig.tight_layout()
    return fig


def pr_figure(y_true: np.ndarray, probs: np.ndarray, space: LabelSpace):
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _setup()
    names = plot_names(space)
    fig, ax = plt.subplots(figsize=(7, 5))
    for j in range(len(space.labels)):
        if y_true[:, j].sum() == 0:
            continue
        p, r, _ = precision_recall_curve(y_true[:, j], probs[:, j])
        ap = average_precision_score(y_true[:, j], probs[:, j])
        ax.plot(r, p, label=f"{names[j]} AP={ap:.2f}", lw=1)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=6, loc="lower left", ncol=2)
    fig.tight_layout()
    return fig


def write_evaluation(
    out_dir: Path,
    docs: Sequence[Doc],
    y_true: np.ndarray,
    probs: np.ndarray,
    y_pred: np.ndarray,
    space: LabelSpace,
    loggers=None,
    title: str = "",
) -> dict:
    """Write ``report.md``, ``metrics.json``, ``predictions.jsonl``, ``confusion.png``, ``pr_curve.png``."""

    out_dir = Path(out_dir)
    y_true, y_pred = np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int)
    rep = C.report(y_true, y_pred, space.labels)
    values = scores.metrics(y_true, y_pred, space.task, space.labels, space.parents)
    md = [
        f"# textcls evaluation{': ' + title if title else ''}", "",
        f"task: {space.task}, {len(docs)} texts, {len(space.labels)} labels", "",
        "```", rep["line"], "```", "",
        f"micro P/R/F1: {rep['micro'].precision:.4f} / {rep['micro'].recall:.4f} / {rep['micro'].f1:.4f}  ",
        f"macro P/R/F1: {rep['macro'].precision:.4f} / {rep['macro'].recall:.4f} / {rep['macro'].f1:.4f}", "",
        C.markdown_table(rep["per_label"]),
    ]
    if not _cjk_font():
        md += ["", "Figures name labels L0..: " + ", ".join(f"L{j}={label}" for j, label in enumerate(space.labels))]
    io.write_text(out_dir / "report.md", "\n".join(md))
    io.write_json(out_dir / "metrics.json", {**values, "line": rep["line"]})
    io.write_jsonl(out_dir / "predictions.jsonl", prediction_rows(docs, probs, y_pred, space, y_true))
    figures = {"confusion.png": confusion_figure(y_true, y_pred, space), "pr_curve.png": pr_figure(y_true, probs, space)}
    for name, fig in figures.items():
        tracking.save_figure(loggers, fig, out_dir / name, "eval")
    for name in ("report.md", "metrics.json", "predictions.jsonl"):
        tracking.log_artifact(loggers, out_dir / name, "eval")
    return {**values, "line": rep["line"], "per_label": rep["per_label"]}
