"""The metrics a run logs, by task, all from :mod:`common.metrics.classification` (scikit-learn underneath).

* every task: ``micro_f1``, ``macro_f1``, ``micro_precision``, ``micro_recall`` over the output columns;
* ``binary``: ``f1`` / ``precision`` / ``recall`` of the positive column;
* ``multiclass``: ``acc`` (= micro F1 for one label per row) and ``macro_f1``;
* ``hierarchical``: ``gate_f1`` (micro over the top-level labels) and ``sub_micro_f1`` / ``sub_macro_f1``
  over the sub-tags.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.metrics import classification as C


def metrics(y_true: np.ndarray, y_pred: np.ndarray, task: str, labels: Sequence[str], parents: Sequence[int]) -> dict[str, float]:
    labels = list(labels)
    micro = C.prf(y_true, y_pred, "micro", labels)
    macro = C.prf(y_true, y_pred, "macro", labels)
    out = {
        "micro_f1": micro.f1, "micro_precision": micro.precision, "micro_recall": micro.recall, "macro_f1": macro.f1,
    }
    if task == "binary":
        out.update(f1=micro.f1, precision=micro.precision, recall=micro.recall)
    elif task == "multiclass":
        out["acc"] = float((np.asarray(y_true).argmax(1) == np.asarray(y_pred).argmax(1)).mean())
    elif task == "hierarchical":
        roots = [label for label, p in zip(labels, parents, strict=True) if p < 0]
        subs = [label for label, p in zip(labels, parents, strict=True) if p >= 0]
        out["gate_f1"] = C.prf(y_true, y_pred, "micro", labels, exclude=subs).f1
        if subs:
            out["sub_micro_f1"] = C.prf(y_true, y_pred, "micro", labels, exclude=roots).f1
            out["sub_macro_f1"] = C.prf(y_true, y_pred, "macro", labels, exclude=roots).f1
    return out
