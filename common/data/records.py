"""Readers that validate every record and say ``file:line: what is wrong``.

``on_bad_record="error"`` (the default) stops at the first bad record; ``"skip"`` drops it, counts it and
logs a summary with the first few reasons. A ``validate`` callable turns a raw record into whatever the
package wants and raises :class:`ValueError` (or :class:`~common.errors.DataError`) with a short reason.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from common.errors import DataError

log = logging.getLogger(__name__)

T = TypeVar("T")
OnBad = Literal["error", "skip"]


@dataclass
class BadRecords:
    """What a reader skipped: ``count`` and the first reasons (``file:line: reason``)."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(where)


def check_on_bad_record(on_bad_record: str) -> None:
    """Readers take ``error`` or ``skip``; anything else is refused before a record is read."""
    if on_bad_record not in ("error", "skip"):
        raise DataError(f"data.on_bad_record: expected 'error' or 'skip', got {on_bad_record!r}")


def check_utf8(path: str | Path) -> Path:
    """Readers take UTF-8 text; a file in another encoding (GBK is common for Chinese data) fails on the
    first line that is not UTF-8 instead of as a ``UnicodeDecodeError`` deep inside a reader."""
    path = Path(path)
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); save the file as UTF-8") from None
    return path


def _open(path: Path):
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    return check_utf8(path).open(encoding="utf-8-sig", newline="")


def _collect(
    rows: Iterable[tuple[int, Any]],
    path: Path,
    validate: Callable[[Any], T],
    on_bad_record: str,
    bad: BadRecords,
    unique: str | None = None,
) -> list[T]:
    out: list[T] = []
    seen: dict[str, int] = {}
    for lineno, raw in rows:
        try:
            if isinstance(raw, Exception):
                raise raw
            value = validate(raw)
            if unique is not None:  # a primary key: a second record under it would silently replace the first
                key = str(raw.get(unique, "")).strip()
                if key in seen:
                    raise ValueError(f"duplicate {unique} {key!r} (first seen on line {seen[key]})")
                seen[key] = lineno
            out.append(value)
        except (ValueError, KeyError, TypeError, DataError) as e:
            reason = str(e) if not isinstance(e, KeyError) else f"missing field {e}"
            where = f"{path}:{lineno}: {reason}"
            if on_bad_record == "error":
                raise DataError(where) from None
            bad.add(where)
    if bad.count:
        log.warning("%s: skipped %d bad record(s), e.g. %s", path, bad.count, "; ".join(bad.examples[:3]))
    return out


def read_jsonl(
    path: str | Path,
    validate: Callable[[dict], T] = lambda r: r,
    on_bad_record: OnBad = "error",
    bad: BadRecords | None = None,
    unique: str | None = None,
) -> list[T]:
    """Records of a JSON-lines file (blank lines ignored), each passed through ``validate``; with ``unique``,
    that field is a primary key and a repeated value is an error at the second record's line."""
    check_on_bad_record(on_bad_record)
    path = Path(path)
    bad = bad if bad is not None else BadRecords()

    def rows():
        with _open(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    yield lineno, ValueError(f"invalid JSON ({e.msg} at column {e.colno})")
                    continue
                if not isinstance(obj, dict):
                    yield lineno, ValueError(f"expected a JSON object, got {type(obj).__name__}")
                    continue
                yield lineno, obj

    records = _collect(rows(), path, validate, on_bad_record, bad, unique)
    if not records and not bad.count:
        raise DataError(f"{path}: no records")
    return records


def read_json_records(path: str | Path, validate: Callable[[dict], T] = lambda r: r, on_bad_record: OnBad = "error",
                      unique: str | None = None, bad: BadRecords | None = None) -> list[T]:
    """Records of a JSONL file or of a JSON array (LLaVA's ``.json``), each through ``validate``; errors name
    ``file:line`` either way (an array element's line is where it starts)."""
    path = Path(path)
    with _open(path) as f:
        text = f.read()
    if not text.lstrip().startswith("["):
        return read_jsonl(path, validate, on_bad_record=on_bad_record, unique=unique, bad=bad)
    check_on_bad_record(on_bad_record)
    dec = json.JSONDecoder()

    def rows():
        i = text.index("[") + 1
        while True:
            while i < len(text) and text[i] in " \t\r\n,":
                i += 1
            if i >= len(text):
                yield text.count("\n", 0, i) + 1, ValueError("invalid JSON (the array is not closed with ']')")
                return
            if text[i] == "]":
                return
            line = text.count("\n", 0, i) + 1
            try:
                obj, i = dec.raw_decode(text, i)
            except json.JSONDecodeError as e:
                yield e.lineno, ValueError(f"invalid JSON ({e.msg} at column {e.colno})")
                return
            yield line, obj if isinstance(obj, dict) else ValueError(f"expected a JSON object, got {type(obj).__name__}")

    bad = bad if bad is not None else BadRecords()
    records = _collect(rows(), path, validate, on_bad_record, bad, unique)
    if not records and not bad.count:
        raise DataError(f"{path}: no records")
    return records


def read_csv(
    path: str | Path,
    required: Iterable[str] = (),
    validate: Callable[[dict], T] = lambda r: r,
    on_bad_record: OnBad = "error",
    bad: BadRecords | None = None,
    allowed: Iterable[str] | None = None,
    unique: str | None = None,
) -> list[T]:
    """Rows of a CSV file with a header as dicts; line numbers count the header as line 1.

    ``required`` columns must all be present; with ``allowed``, any other column is an error too; ``unique``
    names a primary-key column (a repeated value is an error at the second row's line).
    """
    check_on_bad_record(on_bad_record)
    path = Path(path)
    bad = bad if bad is not None else BadRecords()
    with _open(path) as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}:1: missing column(s) {', '.join(missing)}; header is {', '.join(header)}")
        if allowed is not None:
            unknown = [c for c in header if c not in set(allowed)]
            if unknown:
                raise DataError(f"{path}:1: unknown column(s) {', '.join(unknown)}; expected {', '.join(allowed)}")

        def rows():
            for row in reader:
                lineno = reader.line_num
                if None in row or any(v is None for v in row.values()):
                    yield lineno, ValueError(f"expected {len(header)} fields")
                    continue
                yield lineno, row

        records = _collect(rows(), path, validate, on_bad_record, bad, unique)
    if not records and not bad.count:
        raise DataError(f"{path}: no records")
    return records


def require_text(value: Any, name: str) -> str:
    """A non-empty string field, stripped; ``ValueError`` naming the field otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"field '{name}' must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise ValueError(f"field '{name}' is empty")
    return value
