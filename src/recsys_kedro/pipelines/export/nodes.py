"""Export nodes: shape each split for Mosaic MDS (the catalog's MDSDataset writes and checks it)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

MDS_COLUMNS = {"user_idx": "int64", "item_idx": "int64", "label": "int32", "rating": "float32"}
_SPARK_TYPES = {"int64": "long", "int32": "int", "float32": "float"}


def to_mds_frame(split: DataFrame, num_partitions: int) -> DataFrame:
    """Select and cast the training columns, one Spark partition per MDS writer task.

    Returns:
        ``user_idx: long, item_idx: long, label: int, rating: float`` in ``num_partitions``
        partitions. The row count is checked against the written MDS index on save.
    """
    columns = [F.col(c).cast(_SPARK_TYPES[t]).alias(c) for c, t in MDS_COLUMNS.items()]
    return split.select(*columns).repartition(int(num_partitions))
