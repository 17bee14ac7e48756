"""Approximate and exact nearest-neighbour retrieval of items for the two-tower model."""

from recsys_kedro.retrieval.index import (
    INDEX_KINDS,
    IndexConfig,
    build_index,
    default_nlist,
    deserialize_index,
    recall_vs_exact,
    search,
    serialize_index,
)

__all__ = [
    "INDEX_KINDS",
    "IndexConfig",
    "build_index",
    "default_nlist",
    "deserialize_index",
    "recall_vs_exact",
    "search",
    "serialize_index",
]
