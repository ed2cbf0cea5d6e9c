"""Readers: Shopee CSV, query/gallery JSONL, DeepMatcher tables and pair files, FlagEmbedding JSONL, Ditto."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.data.records import check_utf8, read_csv, read_jsonl, require_text
from common.errors import ConfigError, DataError
from retrieval.data.catalog import Catalog, Split

SHOPEE_COLUMNS = ("posting_id", "image", "image_phash", "title", "label_group")


def read_shopee(path: str | Path, image_dir: str | Path | None = None, on_bad_record: str = "error",
                check_images: bool = True) -> Catalog:
    """Shopee ``posting_id,image,image_phash,title,label_group``; unknown columns, duplicate ids, empty titles
    and missing images are ``file:line:`` errors."""
    path = Path(path)
    image_dir = Path(image_dir) if image_dir else path.parent / "images"

    def validate(row: dict) -> tuple:
        pid = require_text(row["posting_id"], "posting_id")
        title = require_text(row["title"], "title")
        group = require_text(row["label_group"], "label_group")
        img = require_text(row["image"], "image")
        full = image_dir / img
        if check_images and not full.is_file():
            raise ValueError(f"missing image {full}")
        return pid, title, group, str(full)

    rows = read_csv(path, required=SHOPEE_COLUMNS, validate=validate, on_bad_record=on_bad_record,
                    allowed=SHOPEE_COLUMNS, unique="posting_id")
    ids, titles, groups, images = (list(x) for x in zip(*rows, strict=True))
    return Catalog(ids, titles, groups, images)


def _record_text(row: dict, fields: list[str] | None) -> str:
    keys = fields or [k for k in row if k not in ("id",)][:1]
    return " ".join(str(row.get(k) or "").strip() for k in keys).strip()


def _table(path: Path, fields: list[str] | None, on_bad_record: str, image_dir: Path | None = None) -> dict[str, dict]:
    def validate(row: dict) -> dict:
        require_text(row.get("id"), "id")
        if fields:
            missing = [f for f in fields if f not in row]
            if missing:
                raise ValueError(f"missing field(s) {missing}")
        if not _record_text(row, fields):
            raise ValueError(f"empty text in {', '.join(fields or ['the first column after id'])}")
        if "image" in row:  # optional photo column, relative to image_dir (default: the table's folder)
            full = (image_dir or path.parent) / require_text(row["image"], "image")
            if not full.is_file():
                raise ValueError(f"missing image {full}")
            row["image"] = str(full)
        return row

    rows = read_csv(path, required=["id"], validate=validate, on_bad_record=on_bad_record, unique="id")
    return {row["id"].strip(): row for row in rows}


def text_field(folder: Path) -> list[str]:
    """The title-like column of a DeepMatcher table: ``name`` (Abt-Buy) or ``title`` (Walmart-Amazon, …)."""
    with (folder / "tableA.csv").open(encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f))
    for cand in ("name", "title"):
        if cand in header:
            return [cand]
    return [h for h in header if h not in ("id", "image")][:1]


def _known_ids(a: str, b: str, known: tuple[set, set] | None) -> tuple[str, str]:
    if known is not None:
        for side, rid, ids in (("tableA", a, known[0]), ("tableB", b, known[1])):
            if rid not in ids:
                raise ValueError(f"{side}_id {rid!r} is not in {side}.csv")
    return a, b


def read_matches(folder: Path, on_bad_record: str = "error", known: tuple[set, set] | None = None) -> list[tuple[str, str]]:
    """Matched ``(tableA_id, tableB_id)``: ``matches.csv``, else the label-1 rows of the labelled pair files.

    With ``known`` (the ids of tableA and tableB) a pair naming another id is a ``file:line`` error."""
    f = folder / "matches.csv"
    if f.exists():
        rows = read_csv(f, required=["tableA_id", "tableB_id"], on_bad_record=on_bad_record,
                        validate=lambda r: _known_ids(require_text(r["tableA_id"], "tableA_id"), require_text(r["tableB_id"], "tableB_id"), known))
        return rows
    pairs = []
    for name in ("train.csv", "valid.csv", "test.csv"):
        if (folder / name).exists():
            pairs += [(a, b) for a, b, y in read_pairs(folder / name, on_bad_record, known) if y == 1]
    if not pairs:
        raise DataError(f"{folder}: no matches.csv and no labelled train/valid/test.csv pairs")
    return pairs


def read_pairs(path: Path, on_bad_record: str = "error", known: tuple[set, set] | None = None) -> list[tuple[str, str, int]]:
    """Labelled pairs ``tableA_id|ltable_id, tableB_id|rtable_id, label`` (ids checked against ``known``)."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    with check_utf8(path).open(encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f), [])
    a = "tableA_id" if "tableA_id" in header else "ltable_id"
    b = "tableB_id" if "tableB_id" in header else "rtable_id"

    def validate(r):
        y = r["label"].strip()
        if y not in ("0", "1"):
            raise ValueError(f"label must be 0 or 1, got {y!r}")
        return (*_known_ids(require_text(r[a], a), require_text(r[b], b), known), int(y))

    return read_csv(path, required=[a, b, "label"], validate=validate, on_bad_record=on_bad_record)


def read_deepmatcher(folder: str | Path, fields: list[str] | None = None, on_bad_record: str = "error",
                     image_dir: str | Path | None = None) -> Catalog:
    """``tableA.csv``, ``tableB.csv`` and matches as a catalog; ids ``a:<id>`` / ``b:<id>``; each match is a
    group (connected components when a record matches several), unmatched records are singletons. A table's
    optional ``image`` column names each record's photo (relative to ``image_dir``, default the folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such DeepMatcher folder (expected tableA.csv, tableB.csv, matches.csv)")
    for table in ("tableA.csv", "tableB.csv"):
        if not (folder / table).is_file():
            raise DataError(f"{folder / table}: no such file (a DeepMatcher folder holds tableA.csv, tableB.csv and matches)")
        check_utf8(folder / table)  # text_field reads tableA's header through a decoder that reads ahead
    fields = fields or text_field(folder)
    image_dir = Path(image_dir) if image_dir else None
    ta = _table(folder / "tableA.csv", fields, on_bad_record, image_dir)
    tb = _table(folder / "tableB.csv", fields, on_bad_record, image_dir)
    parent: dict[str, str] = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for a, b in read_matches(folder, on_bad_record, (set(ta), set(tb))):
        ra, rb = find(f"a:{a}"), find(f"b:{b}")
        if ra != rb:
            parent[ra] = rb
    ids, titles, groups, side, images = [], [], [], [], []
    for s, table in (("a", ta), ("b", tb)):
        for rid, row in table.items():
            pid = f"{s}:{rid}"
            ids.append(pid)
            titles.append(_record_text(row, fields))
            groups.append(find(pid))
            side.append(s)
            images.append(row.get("image"))
    return Catalog(ids, titles, groups, images, side)


QUERY_GALLERY_KEYS = ("id", "title", "image", "group")


def read_query_gallery(queries: str | Path, gallery: str | Path, on_bad_record: str = "error",
                       fields_map: dict[str, str] | None = None) -> tuple[Catalog, Split]:
    """Query/gallery JSONL: ``{id, title, image?, group}`` per line in each file; ``fields_map`` names the file's
    own keys (``{"title": "name", "group": "sku"}``), so a JSONL with other key names reads as it is."""
    fmap = dict(fields_map or {})
    for k in fmap:
        if k not in QUERY_GALLERY_KEYS:
            raise ConfigError(f"data.fields_map.{k}: unknown field (expected one of {', '.join(QUERY_GALLERY_KEYS)})")
    key = {k: str(fmap.get(k, k)) for k in QUERY_GALLERY_KEYS}

    def val(r):
        for k in ("id", "group"):
            if key[k] not in r:
                raise ValueError(f"missing field '{key[k]}'")
        return (require_text(str(r[key["id"]]), key["id"]), require_text(r.get(key["title"]), key["title"]),
                require_text(str(r[key["group"]]), key["group"]), r.get(key["image"]))

    q = read_jsonl(queries, val, on_bad_record, unique=key["id"])
    g = read_jsonl(gallery, val, on_bad_record, unique=key["id"])
    rows = [(f"q:{a}", b, c, d) for a, b, c, d in q] + [(f"g:{a}", b, c, d) for a, b, c, d in g]
    ids, titles, groups, images = (list(x) for x in zip(*rows, strict=True))
    cat = Catalog(ids, titles, groups, images, ["a"] * len(q) + ["b"] * len(g))
    qi, gi = np.arange(len(q)), np.arange(len(q), len(rows))
    return cat, Split(qi, gi, np.arange(len(rows)))


def read_flag_jsonl(path: str | Path, on_bad_record: str = "error") -> list[dict]:
    """FlagEmbedding training JSONL ``{query: str, pos: [str], neg: [str], prompt?: str}`` (``prompt``: the
    record's query instruction, kept only when present)."""

    def val(r):
        q = require_text(r.get("query"), "query")
        pos, neg = r.get("pos"), r.get("neg", [])
        if not isinstance(pos, list) or not pos or not all(isinstance(p, str) and p.strip() for p in pos):
            raise ValueError("field 'pos' must be a non-empty list of non-empty strings")
        if not isinstance(neg, list) or not all(isinstance(p, str) and p.strip() for p in neg):
            raise ValueError("field 'neg' must be a list of non-empty strings")
        out = {"query": q, "pos": pos, "neg": neg}
        if r.get("prompt") is not None:
            if not isinstance(r["prompt"], str):
                raise ValueError(f"field 'prompt' must be a string, got {type(r['prompt']).__name__}")
            out["prompt"] = r["prompt"]
        return out

    return read_jsonl(path, val, on_bad_record)


def ditto_fields(text: str) -> dict[str, str]:
    """``COL name VAL x COL price VAL y`` (Ditto's serialisation) -> ``{name: x, price: y}``."""
    out = {}
    for m in re.finditer(r"COL (\S+) VAL ?(.*?)(?= COL \S+ VAL\b|$)", text.strip()):
        out[m.group(1)] = m.group(2).strip()
    return out


def read_ditto(path: str | Path, text: Callable[[str], str] | None = None) -> list[tuple[str, str, int]]:
    """Ditto/DeepMatcher split lines ``left<TAB>right<TAB>label`` as serialised texts; ``text`` turns each
    side into the model's input (a ``ValueError`` from it is this line's error)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    out = []
    for lineno, line in enumerate(check_utf8(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or parts[2].strip() not in ("0", "1"):
            raise DataError(f"{path}:{lineno}: expected 'left<TAB>right<TAB>0|1'")
        try:
            left, right = (text(parts[0]), text(parts[1])) if text else (parts[0], parts[1])
        except ValueError as e:
            raise DataError(f"{path}:{lineno}: {e}") from None
        out.append((left, right, int(parts[2])))
    return out
