"""Retrieval data: readers (Shopee CSV, query/gallery JSONL, DeepMatcher tables, FlagEmbedding JSONL), splits,
datasets, the batch sampler and the DataModule.

Everything becomes a :class:`Catalog`: items with an id, a title, an optional image and a ``group`` (two
items match when their groups are equal). A :class:`Split` says which items are queries, which are the
gallery they are ranked against, and which form the pool scored with the Shopee F1 (all-vs-all, self
included). Shopee-style data: queries = gallery = pool = the split's postings. DeepMatcher tables:
queries = tableA records of the split's match groups, gallery = all of tableB, pool = both sides of the
split's match groups.

Modules: :mod:`.catalog` (Catalog, Split), :mod:`.readers`, :mod:`.splits`, :mod:`.datasets`,
:mod:`.samplers`, :mod:`.datamodule`. The names below are re-exported, so ``from retrieval.data import X``
works for all of them.
"""

from retrieval.data.catalog import Catalog, Split
from retrieval.data.datamodule import RetrievalDataModule, load_catalog, negatives_from_file
from retrieval.data.datasets import ItemDataset, ItemLoader, PairDataset, collate_items, collate_pairs
from retrieval.data.readers import (
    SHOPEE_COLUMNS,
    ditto_fields,
    read_deepmatcher,
    read_ditto,
    read_flag_jsonl,
    read_matches,
    read_pairs,
    read_query_gallery,
    read_shopee,
    text_field,
)
from retrieval.data.samplers import UniqueGroupBatchSampler
from retrieval.data.splits import all_split, make_splits
from retrieval.schemas import DataConfig, SynthConfig

__all__ = [
    "SHOPEE_COLUMNS", "Catalog", "DataConfig", "ItemDataset", "ItemLoader", "PairDataset", "RetrievalDataModule",
    "Split", "SynthConfig", "UniqueGroupBatchSampler", "all_split", "collate_items", "collate_pairs", "ditto_fields",
    "load_catalog", "make_splits", "negatives_from_file", "read_deepmatcher", "read_ditto", "read_flag_jsonl",
    "read_matches", "read_pairs", "read_query_gallery", "read_shopee", "text_field",
]
