"""From a raw product table to the records JSONL that ``vlm.annotate`` and ``vlm.train data=jsonl`` read.

``python -m vlm.ingest table=products.csv`` runs it (see :mod:`vlm.ingest`). The pieces: :mod:`.table` (CSV /
parquet / JSONL rows through the column mapping), :mod:`.fetch` (images into a content-addressed cache:
http(s), ``file://`` and paths, verified with PIL), :mod:`.runner` (the job: rows -> fetched images ->
records, rejects and report). Brand spellings are folded by :class:`vlm.brands.BrandNames`.
"""
