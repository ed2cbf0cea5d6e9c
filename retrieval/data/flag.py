"""A FlagEmbedding ``{query, pos, neg, prompt?}`` JSONL (what ``retrieval.mine`` writes) as a catalog.

Each record's query is one item on the query side (``a``, id ``q:<n>``, n the record's number); each distinct
pos / neg text of the file is one passage item (``b``, id ``p:<n>``), so the gallery every query is ranked
against is the pool of all passages in the file. A query and its positives share a group (connected
components: two queries with a common positive are one group), so the group-wise splits of
:func:`~retrieval.data.splits.make_splits` hold out whole queries with their positives, and scoring needs
nothing new. Training keeps the file's own lists: :class:`FlagFile` ``positives`` / ``negatives`` map each
query item to its record's passages (FlagEmbedding samples the positive from ``pos`` and the group's
negatives from ``neg``).

Prompts are prepended to the text: the record's ``prompt`` (else ``query_prompt``) to its query, and
``passage_prompt`` to every passage, in training and evaluation alike (BGE's "Represent this sentence for
searching relevant passages: " is a query prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retrieval.data.catalog import Catalog
from retrieval.data.readers import read_flag_jsonl


@dataclass
class FlagFile:
    catalog: Catalog
    positives: dict[int, list[int]]  # query item -> its record's pos passages
    negatives: dict[int, list[int]]  # query item -> its record's neg passages (in file order)


def read_flag_catalog(path: str | Path, query_prompt: str = "", passage_prompt: str = "",
                      on_bad_record: str = "error") -> FlagFile:
    records = read_flag_jsonl(path, on_bad_record)
    n = len(records)
    passage: dict[str, int] = {}  # text -> item index (n + order of first appearance)
    for r in records:
        for t in (*r["pos"], *r["neg"]):
            passage.setdefault(t, n + len(passage))
    positives = {k: list(dict.fromkeys(passage[t] for t in r["pos"])) for k, r in enumerate(records)}
    negatives = {k: [passage[t] for t in r["neg"]] for k, r in enumerate(records)}

    parent = list(range(n + len(passage)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for q, ps in positives.items():
        for p in ps:
            parent[find(q)] = find(p)
    texts = list(passage)
    ids = [f"q:{k}" for k in range(n)] + [f"p:{k}" for k in range(len(texts))]
    titles = [r.get("prompt", query_prompt) + r["query"] for r in records] + [passage_prompt + t for t in texts]
    groups = [f"g{find(i)}" for i in range(len(ids))]
    cat = Catalog(ids, titles, groups, [None] * len(ids), ["a"] * n + ["b"] * len(texts))
    return FlagFile(cat, positives, negatives)
