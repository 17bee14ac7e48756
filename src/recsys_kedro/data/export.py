"""Export: shape a split for Mosaic MDS (the catalog's MDSDataset writes and checks it)."""

from __future__ import annotations

from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

_SPARK_TYPES = {"int64": "long", "int32": "int", "float32": "float", "float64": "double"}


def to_mds_frame(split: DataFrame, params: dict[str, Any]) -> DataFrame:
    """Select and cast the columns to export, one Spark partition per MDS writer task.

    Args:
        split: One split (train, validation or test).
        params: ``num_partitions`` (parallel MDS writers) and ``columns``: column -> dtype
            (``int64``, ``int32``, ``float32``, ``float64``) to select and cast, or ``null``
            to export every column as it is typed (arrays of ids become jagged features).
            A float column's missing values are exported as NaN (an implicit event log has
            no rating). A ``weight`` column (a weighted label rule) is always exported.

    Returns:
        The frame the ``{split}_mds`` dataset writes; its row count is checked against the
        written shards on save.
    """
    columns = params.get("columns")
    frame = split
    if columns:
        unknown = sorted(set(columns.values()) - set(_SPARK_TYPES))
        if unknown:
            raise ValueError(
                f"export.columns: dtype(s) {unknown} are not among {sorted(_SPARK_TYPES)}"
            )
        missing = sorted(set(columns) - set(split.columns))
        if missing:
            raise ValueError(
                f"export.columns names {missing}, which the split does not have "
                f"(it has {split.columns})"
            )
        if "weight" in split.columns and "weight" not in columns:
            # A weighted label rule's row weights always travel (the loss reads them); a
            # split without them keeps its columns, and so its rows' order, unchanged.
            columns = {**columns, "weight": "float32"}
        frame = split.select(*[_cast(c, t).alias(c) for c, t in columns.items()])
    return frame.repartition(int(params["num_partitions"]))


def _cast(column: str, dtype: str) -> Column:
    cast = F.col(column).cast(_SPARK_TYPES[dtype])
    if dtype.startswith("float"):  # missing -> NaN, what a float array holds for "none"
        return F.coalesce(cast, F.lit(float("nan")).cast(_SPARK_TYPES[dtype]))
    return cast
