"""Label hierarchy: NeuralClassifier taxonomy files and ``parent--child`` label names.

A taxonomy file has one parent per line followed by its children, tab-separated (NeuralClassifier's
format; a ``Root`` line lists the top level), e.g.::

    Root\t新车资讯\t其他
    新车资讯\t新车资讯--谍照\t新车资讯--预热

A file with one label per line is a flat taxonomy. ``其他`` (:data:`OTHER`) marks "none of the tags": it
is accepted in data files but is never a model output of a multi-label / hierarchical task.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from common.data.records import check_utf8
from common.errors import DataError
from common.io import write_text

SEP = "--"
OTHER = "其他"
GATE = "新车资讯"
ROOT_NAMES = {"Root", "ROOT", "root"}

# The 12 sub-tags under the gate and their measured share of *all* articles (issue #4).
SUBTAG_SHARES: dict[str, float] = {
    "新车解析": 0.148,
    "新车报价": 0.0556,
    "新车上市": 0.0545,
    "发布亮相": 0.0304,
    "预热": 0.0256,
    "预售": 0.0165,
    "配置曝光": 0.0079,
    "谍照": 0.0051,
    "实车曝光": 0.0045,
    "新车官图": 0.0044,
    "申报图": 0.0040,
    "新车到店": 0.0013,
}
GATE_SHARE = 1.0 - 0.832  # articles with at least one sub-tag


def parent_of(label: str) -> str | None:
    return label.rsplit(SEP, 1)[0] if SEP in label else None


def with_ancestors(labels: Iterable[str]) -> list[str]:
    """``["a--b--c"]`` -> ``["a", "a--b", "a--b--c"]`` (order kept, no duplicates)."""
    out: dict[str, None] = {}
    for label in labels:
        parts = label.split(SEP)
        for i in range(1, len(parts) + 1):
            out[SEP.join(parts[:i])] = None
    return list(out)


@dataclass
class Taxonomy:
    """The model's output labels, parents always before their children."""

    labels: list[str]
    parents: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ordered = with_ancestors(self.labels)
        # parents first: sort by depth, keep the given order within a depth
        depth = {label: label.count(SEP) for label in ordered}
        self.labels = sorted(ordered, key=lambda label: depth[label])
        self.labels = [label for label in self.labels if label != OTHER]
        self.parents = {label: parent_of(label) for label in self.labels}

    @classmethod
    def car_news(cls) -> Taxonomy:
        """The team's taxonomy: the gate and its 12 sub-tags (in order of share)."""
        return cls([GATE, *[f"{GATE}{SEP}{t}" for t in SUBTAG_SHARES]])

    @classmethod
    def read(cls, path: str | Path) -> Taxonomy:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such taxonomy file")
        labels: list[str] = []

        for lineno, line in enumerate(check_utf8(path).read_text(encoding="utf-8-sig").splitlines(), 1):
            names = [n.strip() for n in line.split("\t") if n.strip()]
            if not names:
                continue
            if names[0] in ROOT_NAMES:
                names = names[1:]
            for name in names:
                if SEP in name and parent_of(name) not in labels and parent_of(name) not in names:
                    raise DataError(f"{path}:{lineno}: label {name!r} comes before its parent {parent_of(name)!r}")
            labels.extend(names)
        if not labels:
            raise DataError(f"{path}: empty taxonomy")
        return cls(labels)

    def write(self, path: str | Path) -> None:
        children: dict[str, list[str]] = {}
        for label in self.labels:
            children.setdefault(self.parents[label] or "Root", []).append(label)
        root = children.pop("Root")
        lines = ["\t".join(["Root", *root, OTHER])] + ["\t".join([p, *c]) for p, c in children.items()]
        write_text(path, "\n".join(lines) + "\n")

    @property
    def is_hierarchical(self) -> bool:
        return any(p is not None for p in self.parents.values())

    def parent_index(self) -> list[int]:
        """For each label, the index of its parent or -1."""
        index = {label: i for i, label in enumerate(self.labels)}
        return [index[p] if p is not None else -1 for p in (self.parents[label] for label in self.labels)]

    def check(self, labels: Iterable[str]) -> list[str]:
        """The labels of one record, validated; ``ValueError`` naming an unknown one."""
        out = []
        for label in labels:
            if not isinstance(label, str) or not label.strip():
                raise ValueError(f"label {label!r} must be a non-empty string")
            label = label.strip()
            if label != OTHER and label not in self.parents:
                known = ", ".join(self.labels[:8]) + (", ..." if len(self.labels) > 8 else "")
                raise ValueError(f"label {label!r} is not in the taxonomy ({known})")
            out.append(label)
        return out
