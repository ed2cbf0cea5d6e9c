"""The prompt modes: a template per mode, filled with the class definitions, the gold class and the limit.

Fields a template may use: ``{classes}`` (one line per class, ``- name: definition``), ``{label}`` (the gold
class), ``{max_chars}`` (the mode's limit). The team's three modes are (1) free reasoning, no class given;
(2) class definitions and the gold class given; (3) as 2 with the answer limited to ``max_chars``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import ConfigError

FIELDS = {"classes", "label", "max_chars"}


@dataclass(frozen=True)
class Mode:
    name: str
    template: str
    max_chars: int | None = None
    title: str = ""

    @property
    def gives_label(self) -> bool:
        return "label" in _fields(self.template)

    def render(self, classes: str, label: str) -> str:
        return self.template.format(classes=classes, label=label, max_chars=self.max_chars)


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def load_modes(modes: Mapping[str, Any], only: list[str] | None = None) -> list[Mode]:
    """``modes: {name: {prompt, max_chars, title, enabled}}`` → the enabled modes in config order."""
    if not isinstance(modes, Mapping) or not modes:
        raise ConfigError("modes: expected a mapping mode name -> {prompt, max_chars, title}")
    out = []
    for name, spec in modes.items():
        where = f"modes.{name}"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where}: expected {{prompt, max_chars, title, enabled}}")
        unknown = set(spec) - {"prompt", "max_chars", "title", "enabled"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (expected prompt, max_chars, title, enabled)")
        if not spec.get("enabled", True) or (only is not None and name not in only):
            continue
        template = spec.get("prompt")
        if not isinstance(template, str) or not template.strip():
            raise ConfigError(f"{where}.prompt: expected a non-empty string")
        try:
            fields = _fields(template)
        except ValueError as e:
            raise ConfigError(f"{where}.prompt: bad template ({e}); write a literal brace as {{{{ or }}}}") from None
        bad = fields - FIELDS
        if bad:
            raise ConfigError(f"{where}.prompt: unknown field(s) {', '.join('{' + b + '}' for b in sorted(bad))} (allowed: {{classes}}, {{label}}, {{max_chars}})")
        max_chars = spec.get("max_chars")
        if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1):
            raise ConfigError(f"{where}.max_chars: expected a positive integer or null, got {max_chars!r}")
        if "max_chars" in fields and max_chars is None:
            raise ConfigError(f"{where}.prompt uses {{max_chars}} but {where}.max_chars is null")
        out.append(Mode(str(name), template, max_chars, str(spec.get("title") or name)))
    if only is not None:
        missing = set(only) - {m.name for m in out} - {n for n in modes}
        if missing:
            raise ConfigError(f"run_modes: unknown mode(s) {', '.join(sorted(missing))} (modes: {', '.join(modes)})")
    if not out:
        raise ConfigError("modes: no mode is enabled")
    return out


CAPTION_FIELDS = {"known", "brand", "title", "description"}


@dataclass(frozen=True)
class CaptionPrompt:
    """The ``+annotate=captions`` prompt: ``template`` with ``{known}`` (one ``known_lines`` line per field the
    product has, brand first, or ``no_known``) and the raw ``{brand}``, ``{title}``, ``{description}`` ("" when
    absent). An item without a brand label gets no brand line: the teacher is not told one."""

    template: str
    known_lines: Mapping[str, str]
    no_known: str
    fields: tuple[str, ...] = ("title", "description")

    def __post_init__(self) -> None:
        try:
            bad = _fields(self.template) - CAPTION_FIELDS
        except ValueError as e:
            raise ConfigError(f"captions.prompt: bad template ({e}); write a literal brace as {{{{ or }}}}") from None
        if bad:
            raise ConfigError(f"captions.prompt: unknown field(s) {', '.join('{' + b + '}' for b in sorted(bad))} "
                              f"(allowed: {', '.join('{' + f + '}' for f in sorted(CAPTION_FIELDS))})")
        for k, line in self.known_lines.items():
            if _fields(line) - {"value"}:
                raise ConfigError(f"captions.known_lines.{k}: the only field is {{value}}, got {line!r}")

    def render(self, brand: str | None, fields: Mapping[str, str]) -> str:
        lines = [self.known_lines["brand"].format(value=brand)] if brand and "brand" in self.known_lines else []
        lines += [self.known_lines[k].format(value=fields[k]) for k in self.fields if fields.get(k) and k in self.known_lines]
        return self.template.format(known="\n".join(lines) or self.no_known, brand=brand or "",
                                    title=fields.get("title", ""), description=fields.get("description", "")).strip()
