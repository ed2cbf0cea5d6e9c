"""Brand recalls of generated captions, the recall table, the sample grid and the trade-off plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from common.metrics.brand import RECALL_NAMES, BrandMatcher, Sample, brand_recalls
from common.tracking import differing_overrides, mlflow_run

# The six numbers the team tracks per run (DESIGN.md §6), in the order of their hand-kept table.
TRACKED = (
    ("train", "logo_recall", "train LOGO RECALL"),
    ("train", "brand_recall", "train BRAND RECALL"),
    ("test", "logo_recall", "test LOGO RECALL"),
    ("test", "none_recall", "NONE RECALL"),
    ("test", "none_brand_recall", "NONE BRAND RECALL"),
    ("test", "none_brand_label_recall", "NONE BRAND LABEL RECALL"),
)


def recalls(preds: Sequence[dict], matcher: BrandMatcher) -> dict[str, float]:
    """``preds``: dicts with kind, brand and the generated ``pred`` caption."""
    return brand_recalls([Sample(p["kind"], p["brand"], p["pred"]) for p in preds], matcher)


def score(r: dict[str, float]) -> float:
    """One number for checkpoint selection: mean of the recalls that exist on the split."""
    vals = [r[k] for k in RECALL_NAMES if not math.isnan(r[k])]
    return float(np.mean(vals)) if vals else float("nan")


def recall_table(metrics: dict[str, float], splits: Sequence[str] = ("train", "test")) -> str:
    """Markdown: the five recalls per split, then the six tracked numbers."""
    def fmt(v):
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    lines = ["| split | " + " | ".join(n.replace("_", " ").upper() for n in RECALL_NAMES) + " |",
             "|---|" + "---|" * len(RECALL_NAMES)]
    for s in splits:
        if any(f"{s}/{n}" in metrics for n in RECALL_NAMES):
            lines.append(f"| {s} | " + " | ".join(fmt(metrics.get(f"{s}/{n}")) for n in RECALL_NAMES) + " |")
    lines += ["", "| " + " | ".join(t for _, _, t in TRACKED) + " |", "|" + "---|" * len(TRACKED),
              "| " + " | ".join(fmt(metrics.get(f"{s}/{n}")) for s, n, _ in TRACKED) + " |"]
    return "\n".join(lines)


def sample_grid(preds: Sequence[dict], pixels: Sequence[np.ndarray], matcher: BrandMatcher, n: int = 24,
                title: str | None = None):
    """A matplotlib figure: images with their generated captions, green when the brand verdict is right;
    ``title`` says which split and run they are (``test split · run lora_r16``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(preds))
    cols = 6
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.9))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for i in range(n):
        p = preds[i]
        ok = correct(p, matcher)
        ax = np.atleast_1d(axes).ravel()[i]
        ax.imshow(pixels[i].transpose(1, 2, 0))
        mark = "✓" if ok else "✗"
        gold = p["brand"] or "no brand"
        ax.set_title(f"{mark} [{p['kind']}: {gold}]\n{_wrap(p['pred'])}", fontsize=7,
                     color="green" if ok else "red")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def correct(p: dict, matcher: BrandMatcher) -> bool:
    named = matcher.names(p["pred"])
    if p["kind"] == "none":
        return not named
    return p["brand"] in named


def _wrap(text: str, width: int = 30) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:3])


def tradeoff_plot(points: Sequence[dict], current: dict | None = None, run: str | None = None):
    """NONE RECALL vs NONE BRAND RECALL, one point per run (``{name, none_recall, none_brand_recall}``, and
    ``label``: what sets it apart, see :func:`runs_for_tradeoff`); ``run`` names the current run in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for p in points:
        ax.scatter(p["none_brand_recall"], p["none_recall"], color="tab:blue", alpha=0.7)
        ax.annotate(_wrap(p.get("label") or p["name"], 40), (p["none_brand_recall"], p["none_recall"]), fontsize=7,
                    alpha=0.8)
    if current:
        ax.scatter(current["none_brand_recall"], current["none_recall"], color="tab:red", s=80, marker="*",
                   label="this run")
        ax.legend(loc="lower left")
    ax.set_xlabel("NONE BRAND RECALL (logo-less branded products named)")
    ax.set_ylabel("NONE RECALL (no-brand images left unnamed)")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title("none vs none-brand recall across runs (test split)" + (f"\nrun {run}" if run else ""), fontsize=9)
    fig.tight_layout()
    return fig


def runs_for_tradeoff(loggers) -> list[dict]:
    """Finished runs of the same MLflow experiment that logged both test recalls, each labelled by the
    overrides that differ between them and this run (its run name when none do)."""

    for lg in loggers or []:
        if run := mlflow_run(lg):
            client, run_id = run
            this = client.get_run(run_id)
            out, overrides = [], []
            for r in client.search_runs([this.info.experiment_id], max_results=500):
                m = r.data.metrics
                if "test/none_recall" in m and "test/none_brand_recall" in m and r.info.run_id != run_id:
                    out.append({"name": r.info.run_name or r.info.run_id[:8], "none_recall": m["test/none_recall"],
                                "none_brand_recall": m["test/none_brand_recall"]})
                    overrides.append(json.loads(r.data.tags.get("overrides") or "[]"))
            labels = differing_overrides([*overrides, json.loads(this.data.tags.get("overrides") or "[]")])
            for p, label in zip(out, labels, strict=False):
                p["label"] = label
            return out
    return []


def run_name(loggers) -> str | None:
    """The MLflow run name of the first MLflow logger, for plot titles."""
    for lg in loggers or []:
        if run := mlflow_run(lg):
            client, run_id = run
            return client.get_run(run_id).info.run_name
    return None
