"""A tower's embedding of every id of an index, computed in Spark.

The model file (config and weights, a plain dict) travels to the executors as a broadcast
variable; each partition of ids builds the model once and encodes its ids in chunks, exactly
as the driver would (:meth:`TwoTower.encode_users` / ``encode_items``). The embeddings never
pass through the driver, however many users there are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from recsys_kedro.models.two_tower import model_from_file

__all__ = ["encode_ids", "tower_embeddings"]

ENTITIES = ("user", "item")


def encode_ids(tower: Any, ids: np.ndarray, chunk_rows: int = 65536) -> np.ndarray:
    """``(len(ids), D)`` float32: ``tower`` (``model.encode_users`` / ``encode_items``) of
    ``ids``, ``chunk_rows`` at a time (bounds memory)."""
    index = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    return torch.cat([tower(chunk) for chunk in index.split(chunk_rows)]).numpy().astype(np.float32)


def tower_embeddings(
    index: DataFrame, model_file: dict[str, Any], entity: str, chunk_rows: int = 65536
) -> DataFrame:
    """``<entity>_idx, <entity>_id, embedding`` (``array<float>``) for every row of ``index``.

    Args:
        index: ``<entity>_id, <entity>_idx`` (the features stage's index).
        model_file: the two-tower's model file (:func:`model_from_file`'s input).
        entity: ``"user"`` (query tower) or ``"item"`` (candidate tower).
        chunk_rows: ids encoded at once inside a partition (bounds memory).
    """
    if entity not in ENTITIES:
        raise ValueError(f"entity is one of {ENTITIES}, got {entity!r}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    key, id_col = f"{entity}_idx", f"{entity}_id"
    missing = [c for c in (key, id_col) if c not in index.columns]
    if missing:
        raise ValueError(f"the {entity} index lacks {missing} (it has {index.columns})")
    schema = T.StructType(
        [
            T.StructField(key, T.LongType(), False),
            index.schema[id_col],
            T.StructField("embedding", T.ArrayType(T.FloatType(), False), False),
        ]
    )
    shipped = index.sparkSession.sparkContext.broadcast(model_file)

    def encode(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = model_from_file(shipped.value)  # once per partition
        tower = model.encode_users if entity == "user" else model.encode_items
        for batch in batches:
            ids = batch[key].to_numpy(np.int64)
            vectors = encode_ids(tower, ids, chunk_rows)
            yield pd.DataFrame({key: ids, id_col: batch[id_col], "embedding": list(vectors)})

    return index.select(index[key].cast("long").alias(key), index[id_col]).mapInPandas(
        encode, schema
    )
