"""The label set: class names, definitions (for the prompts) and aliases (for matching answers).

An answer "names" a class the way a caption names a brand in the brand metrics
(:class:`common.metrics.brand.BrandMatcher`: NFKC, case, spacing, punctuation and aliases). A class marked
``none: true`` stands for "no class" (a gold label of ``null``, e.g. an image with no brand): it has no name
to match, and an answer agrees with it when it names no other class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.metrics.brand import BrandMatcher

AMBIGUOUS = "<several>"
UNKNOWN = "<none named>"


@dataclass(frozen=True)
class ClassDef:
    name: str
    definition: str = ""
    aliases: tuple[str, ...] = ()
    none: bool = False


@dataclass
class ClassSet:
    classes: list[ClassDef]
    matcher: BrandMatcher = field(init=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.classes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"classes: duplicate class name(s): {', '.join(dupes)}")
        nones = [c.name for c in self.classes if c.none]
        if len(nones) > 1:
            raise ConfigError(f"classes: at most one class may be marked none: true, got {', '.join(nones)}")
        named = [c for c in self.classes if not c.none]
        self.matcher = BrandMatcher([c.name for c in named], {c.name: list(c.aliases) for c in named if c.aliases})

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def none_class(self) -> str | None:
        return next((c.name for c in self.classes if c.none), None)

    def label_of(self, raw: Any) -> str:
        """A data set's label (``null`` = the none class) as a class name; ValueError for an unknown one."""
        if raw is None:
            if self.none_class is None:
                raise ValueError("label is null but no class is marked none: true")
            return self.none_class
        if not isinstance(raw, str):
            raise ValueError(f"label must be a string or null, got {type(raw).__name__}")
        if raw not in self.names:
            raise ValueError(f"unknown label {raw!r} (classes: {', '.join(self.names)})")
        return raw

    def named(self, answer: str) -> list[str]:
        """The classes an answer names, in class order."""
        found = self.matcher.names(answer)
        return [c.name for c in self.classes if c.name in found]

    def predict(self, answer: str) -> str:
        """The single class an answer names; the none class (when there is one) if it names none."""
        named = self.named(answer)
        if len(named) == 1:
            return named[0]
        if not named:
            return self.none_class or UNKNOWN
        return AMBIGUOUS

    def agrees(self, answer: str, gold: str) -> bool:
        """The answer names the gold class (for the none class: names no class at all)."""
        named = self.named(answer)
        if gold == self.none_class:
            return not named
        return gold in named

    def definitions_text(self) -> str:
        return "\n".join(f"- {c.name}: {c.definition}".rstrip(": ") for c in self.classes)


def _one(i: int, item: Any, where: str) -> ClassDef:
    if isinstance(item, str):
        return ClassDef(item)
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"].strip():
        raise ConfigError(f"{where}[{i}]: expected {{name, definition, aliases, none}} with a non-empty name")
    unknown = set(item) - {"name", "definition", "aliases", "none"}
    if unknown:
        raise ConfigError(f"{where}[{i}]: unknown key(s) {', '.join(sorted(unknown))} (expected name, definition, aliases, none)")
    aliases = item.get("aliases") or []
    if not isinstance(aliases, list | tuple) or not all(isinstance(a, str) for a in aliases):
        raise ConfigError(f"{where}[{i}].aliases: expected a list of strings")
    return ClassDef(item["name"], str(item.get("definition") or ""), tuple(aliases), bool(item.get("none", False)))


def load_classes(items: Iterable[Any] | None = None, file: str | Path | None = None) -> ClassSet:
    """From ``classes.list`` (inline YAML list) or ``classes.file`` (a YAML file with that list)."""
    where = "classes.list"
    if file:
        import yaml

        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"classes.file: {path}: no such file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"classes.file: {path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if isinstance(data, Mapping) and "classes" in data:
            data = data["classes"]
        items, where = data, f"classes.file {path}"
    if not items or not isinstance(items, Iterable) or isinstance(items, str | Mapping):
        raise ConfigError("classes: give classes.list (a list) or classes.file (a YAML list of classes)")
    return ClassSet([_one(i, it, where) for i, it in enumerate(items)])
