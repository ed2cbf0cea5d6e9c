"""A product table (CSV / TSV / parquet / JSONL / JSON array) read with pandas through the column mapping.

Every row becomes a :class:`Row` with where it came from (``file:line``; for parquet ``file:row N``) so a
rejected row can be found again. Cells are strings; an empty cell, NaN or None is "absent".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ConfigError, DataError

log = logging.getLogger(__name__)

OPTIONAL = ("brand", "title", "description")  # a missing column of these is read as absent (and logged)
FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "json"}


@dataclass
class Row:
    where: str  # file:line
    id: str | None
    image: str | None
    brand: Any
    fields: dict[str, str] = field(default_factory=dict)  # title, description when present


def _cell(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def table_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        if fmt not in set(FORMATS.values()):
            raise ConfigError(f"format: expected auto or one of {', '.join(sorted(set(FORMATS.values())))}, got {fmt!r}")
        return fmt
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise ConfigError(f"table: {path}: cannot tell the format from '{path.suffix}'; set format= (csv, tsv, parquet, jsonl, json)") from None


def read_table(path: str | Path, columns, fmt: str = "auto") -> list[Row]:
    """Rows of the table; :class:`ConfigError` naming ``columns.<key>`` when the id or image column is missing
    (a missing brand / title / description column is logged and read as absent)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    kind = table_format(path, fmt)
    try:
        if kind in ("csv", "tsv"):
            df = pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False, encoding="utf-8")
            first = 2  # the header is line 1
        elif kind == "parquet":
            df = pd.read_parquet(path)
            first = 1
        elif kind == "jsonl":
            df = pd.read_json(path, lines=True, dtype=False)
            first = 1
        else:
            df = pd.read_json(path, dtype=False)
            first = 1
    except (ValueError, UnicodeDecodeError, OSError) as e:  # pandas / pyarrow parse errors are ValueErrors
        raise DataError(f"{path}: cannot read as {kind} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    names = {k: getattr(columns, k) for k in ("id", "image", "brand", "title", "description")}
    for key, col in names.items():
        if col is not None and col not in df.columns:
            if key in OPTIONAL:  # a table without titles is common; say so, and read it without
                log.warning("columns.%s: no column %r in %s; reading the table without it", key, col, path)
                names[key] = None
                continue
            raise ConfigError(f"columns.{key}: no column {col!r} in {path} (columns: {', '.join(map(str, df.columns))})")
    unit = "row " if kind == "parquet" else ""
    rows = []
    records = df.to_dict("records")
    for i, rec in enumerate(records):
        fields = {k: v for k in ("title", "description") if names[k] is not None and (v := _cell(rec[names[k]])) is not None}
        rows.append(Row(
            where=f"{path}:{unit}{i + first}",
            id=_cell(rec[names["id"]]) if names["id"] else str(i + first),
            image=_cell(rec[names["image"]]),
            brand=rec[names["brand"]] if names["brand"] else None,
            fields=fields,
        ))
    return rows
