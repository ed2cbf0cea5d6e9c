"""From raw teacher answers to what the team studies: cleaned + matched answers per mode, per-class agreement,
the length-limit effect, suspected label errors and the corrected training set.

Definitions (the report says them too):
* an answer **agrees** with the gold class when it names it, matched like the brand metrics
  (:class:`common.metrics.brand.BrandMatcher`); for the none class, when it names no class;
* **agreement** of a class in a mode = agreeing answers / answered items (status ok and a non-empty cleaned
  answer); failed requests and answers that cleaning emptied are counted apart, never as disagreements;
* an item is a **suspected label error** when the free-reasoning answer names exactly one other class and at
  least ``min_votes`` modes name that same class (the teacher sticks to it even when told the gold class);
* the **corrected training set** is the ``train_from`` mode's cleaned answers, without suspected label errors,
  empty answers and (unless ``keep_disagreeing``) answers that do not name the gold class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vlm.caption_clean import CleanSettings, clean

from .classes import AMBIGUOUS, UNKNOWN, ClassSet
from .dataset import Item
from .prompts import Mode


def annotate_rows(items: Sequence[Item], mode: Mode, cached: dict[str, dict], classes: ClassSet, settings: CleanSettings) -> list[dict]:
    """One row per item (data set order) for ``mode``: the raw answer, cleaned answer, named classes, agreement.

    ``cached`` maps item id → the cache row of the request this run made for it (missing = never finished).
    """
    rows = []
    for it in items:
        c = cached.get(it.id)
        row: dict[str, Any] = {"id": it.id, "image": str(it.image), "label": it.label, "mode": mode.name}
        if c is None or c.get("status") != "ok":
            row.update(status="error" if c else "missing", error=(c or {}).get("error", "not run"), attempts=(c or {}).get("attempts", 0))
            row.update(answer_raw=None, answer="", clean_flags=[], named=[], pred=None, agree=None)
        else:
            answer, flags = clean(c.get("answer"), settings, max_chars=mode.max_chars)
            named = classes.named(answer) if answer else []
            row.update(
                status="ok",
                error=None,
                attempts=c.get("attempts", 1),
                answer_raw=c.get("answer"),
                answer=answer,
                clean_flags=flags,
                named=named,
                pred=classes.predict(answer) if answer else None,
                agree=classes.agrees(answer, it.label) if answer else None,
                finish_reason=c.get("finish_reason"),
                usage=c.get("usage") or {},
            )
        rows.append(row)
    return rows


@dataclass
class ModeStats:
    n: int = 0
    answered: int = 0
    agree: int = 0
    failed: int = 0
    empty: int = 0
    chars: int = 0
    truncated: int = 0

    def add(self, row: dict) -> None:
        self.n += 1
        if row["status"] != "ok":
            self.failed += 1
        elif not row["answer"]:
            self.empty += 1
        else:
            self.answered += 1
            self.agree += bool(row["agree"])
            self.chars += len(row["answer"])
            self.truncated += "truncated" in row["clean_flags"]

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "answered": self.answered,
            "agree": self.agree,
            "agreement": self.agree / self.answered if self.answered else None,
            "failed": self.failed,
            "empty": self.empty,
            "mean_chars": self.chars / self.answered if self.answered else None,
            "truncated": self.truncated,
        }


@dataclass
class Analysis:
    per_class: dict[str, dict[str, dict]]  # class -> mode -> stats
    overall: dict[str, dict]  # mode -> stats
    suspects: list[dict]
    train: list[dict]
    train_counts: dict[str, int]
    length_effect: dict[str, Any] | None
    disagreements: dict[str, list[dict]] = field(default_factory=dict)  # class -> examples
    confusions: dict[str, dict[str, int]] = field(default_factory=dict)  # class -> what the free answer named instead
    diagnosis: dict[str, str] = field(default_factory=dict)  # class -> a one-line reading of its numbers


def analyse(
    items: Sequence[Item],
    modes: Sequence[Mode],
    rows: dict[str, list[dict]],
    classes: ClassSet,
    label_key: str,
    free_mode: str | None,
    compare: Sequence[str] | None,
    train_from: str | None,
    min_votes: int = 2,
    keep_disagreeing: bool = False,
    examples_per_class: int = 3,
    teacher: str = "",
    low_agreement: float = 0.5,
) -> Analysis:
    mode_names = [m.name for m in modes]
    by_id = {m: {r["id"]: r for r in rows[m]} for m in mode_names}

    per_class: dict[str, dict[str, ModeStats]] = {c: {m: ModeStats() for m in mode_names} for c in classes.names}
    overall = {m: ModeStats() for m in mode_names}
    for m in mode_names:
        for r in rows[m]:
            per_class[r["label"]][m].add(r)
            overall[m].add(r)

    suspects = []
    suspect_ids: set[str] = set()
    if free_mode in by_id:
        for it in items:
            free = by_id[free_mode][it.id]
            other = free.get("pred")
            if free["status"] != "ok" or other in (None, it.label, AMBIGUOUS, UNKNOWN):
                continue
            votes = [m for m in mode_names if by_id[m][it.id].get("pred") == other]
            if len(votes) >= min_votes:
                suspect_ids.add(it.id)
                suspects.append(
                    {
                        "id": it.id,
                        "image": str(it.image),
                        "label": it.label,
                        "suggested": other,
                        "votes": len(votes),
                        "modes": votes,
                        "answers": {m: by_id[m][it.id].get("answer") for m in mode_names},
                    }
                )

    length_effect = None
    if compare and len(compare) == 2 and all(c in by_id for c in compare):
        a, b = compare
        flips_lost = [it.id for it in items if by_id[a][it.id].get("agree") is True and by_id[b][it.id].get("agree") is False]
        flips_gained = [it.id for it in items if by_id[a][it.id].get("agree") is False and by_id[b][it.id].get("agree") is True]
        sa, sb = overall[a].as_dict(), overall[b].as_dict()
        length_effect = {
            "from": a,
            "to": b,
            "agreement": {a: sa["agreement"], b: sb["agreement"]},
            "mean_chars": {a: sa["mean_chars"], b: sb["mean_chars"]},
            "truncated": {a: sa["truncated"], b: sb["truncated"]},
            "lost": flips_lost,
            "gained": flips_gained,
        }

    train: list[dict] = []
    counts = {"kept": 0, "dropped_suspect": 0, "dropped_disagree": 0, "dropped_empty": 0, "dropped_failed": 0}
    if train_from in by_id:
        for it in items:
            r = by_id[train_from][it.id]
            if r["status"] != "ok":
                counts["dropped_failed"] += 1
            elif it.id in suspect_ids:
                counts["dropped_suspect"] += 1
            elif not r["answer"]:
                counts["dropped_empty"] += 1
            elif not r["agree"] and not keep_disagreeing:
                counts["dropped_disagree"] += 1
            else:
                counts["kept"] += 1
                rec = {k: v for k, v in it.record.items() if k not in ("caption", "conversations")}
                rec.update(id=it.id, image=str(it.image), caption=r["answer"], teacher={"model": teacher, "mode": train_from})
                rec[label_key] = it.record.get(label_key)
                train.append(rec)

    disagreements: dict[str, list[dict]] = {c: [] for c in classes.names}
    for it in items:  # items the teacher disagreed with in some mode, with every mode's answer
        answers = {m: by_id[m][it.id] for m in mode_names}
        if any(r.get("agree") is False for r in answers.values()) and len(disagreements[it.label]) < examples_per_class:
            disagreements[it.label].append(
                {
                    "id": it.id,
                    "image": str(it.image),
                    "label": it.label,
                    "modes": {m: {k: r.get(k) for k in ("status", "answer", "named", "agree", "error")} for m, r in answers.items()},
                }
            )

    confusions: dict[str, dict[str, int]] = {c: {} for c in classes.names}
    if free_mode in by_id:
        for it in items:
            r = by_id[free_mode][it.id]
            if r.get("agree") is False:
                conf = confusions[it.label]
                conf[r["pred"]] = conf.get(r["pred"], 0) + 1
    stats = {c: {m: s.as_dict() for m, s in ms.items()} for c, ms in per_class.items()}
    n_suspects = {c: sum(s["label"] == c for s in suspects) for c in classes.names}
    given_mode = compare[0] if compare else None
    diagnosis = {
        c: _diagnose(stats[c], free_mode, given_mode, n_suspects[c], confusions[c], low_agreement) for c in classes.names
    }
    return Analysis(
        per_class=stats,
        overall={m: s.as_dict() for m, s in overall.items()},
        suspects=suspects,
        train=train,
        train_counts=counts,
        length_effect=length_effect,
        disagreements=disagreements,
        confusions={c: dict(sorted(v.items(), key=lambda kv: -kv[1])) for c, v in confusions.items()},
        diagnosis=diagnosis,
    )


def _diagnose(stats: dict[str, dict], free_mode: str | None, given_mode: str | None, n_suspects: int, confusion: dict[str, int], low: float) -> str:
    """Which of the team's three explanations a class's numbers point to (a hint for the reader, not a verdict)."""
    free = stats.get(free_mode or "", {}).get("agreement")
    given = stats.get(given_mode or "", {}).get("agreement")
    n = next(iter(stats.values()))["n"] if stats else 0
    if free is None and given is None:
        return "no usable answers"
    if given is not None and given < low:
        return "disagrees even when told the class: a weak teacher or an unclear definition"
    if n and n_suspects / n >= 0.2:
        return f"the teacher keeps naming another class for {n_suspects} of {n}: check these labels"
    if free is not None and free < low:
        top = ", ".join(f"{k} ({v})" for k, v in sorted(confusion.items(), key=lambda kv: -kv[1])[:2])
        return f"recognised only when told: overlapping definitions? free answers name {top or 'other classes'}"
    return "agrees"
