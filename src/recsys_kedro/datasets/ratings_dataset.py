"""``RatingsDataset``: raw ratings (a published file or a table) as a validated Spark DataFrame."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kedro.io.core import AbstractDataset, DatasetError

from recsys_kedro.data.ratings import (
    CANONICAL_COLUMNS,
    DEFAULT_RATING_RANGE,
    RATINGS_FORMATS,
    read_ratings,
    read_ratings_table,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_GLOB_CHARS = frozenset("*?[")


class RatingsDataset(AbstractDataset[None, "DataFrame"]):
    """Loads raw ratings as a Spark DataFrame with the canonical schema (read-only).

    ``user_id: string, item_id: string, rating: double, timestamp: long`` (seconds since the
    epoch, UTC; null where the source has none). The data are read lazily with the active
    SparkSession (the project's hook creates it) and checked in one Spark job; a file that
    does not match its ``format`` raises an error that names the file, the column, what is
    wrong (with examples) and how to fix it. See ``recsys_kedro.data.ratings``.

    A published file (or a directory / glob of them); ``format`` is one of
    ``recbole_inter`` (the default: RecBole's ``ml-100k.inter``), ``ml100k_udata``
    (ml-100k ``u.data``), ``ml1m_dat`` (ml-1m ``ratings.dat``), ``ml_csv`` (ml-20m, ml-25m,
    ml-latest ``ratings.csv``) and ``lfs_item_ratings`` (Learning from Sets of Items 2019
    ``item_ratings.csv``):

    .. code-block:: yaml

        raw_ratings:
          type: recsys_kedro.datasets.ratings_dataset.RatingsDataset
          filepath: data/01_raw/ml-100k/ml-100k.inter
          format: recbole_inter

        raw_ratings_25m:
          type: recsys_kedro.datasets.ratings_dataset.RatingsDataset
          filepath: /Volumes/main/recsys/raw/ml-25m/ratings.csv
          format: ml_csv
          rating_range: [0.5, 5.0]

    A Spark / Unity Catalog table (``format`` is ignored; ``columns`` maps the canonical
    names to the table's column names where they differ; ``timestamp`` may be left out):

    .. code-block:: yaml

        raw_ratings:
          type: recsys_kedro.datasets.ratings_dataset.RatingsDataset
          table: main.recsys.item_ratings
          columns:
            user_id: userId
            item_id: movieId
            rating: rating
            timestamp: tstamp

    Constructing the dataset touches neither Spark nor the file system.
    """

    def __init__(
        self,
        *,
        filepath: str | None = None,
        table: str | None = None,
        format: str = "recbole_inter",
        rating_range: Sequence[float] = DEFAULT_RATING_RANGE,
        columns: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates a new ``RatingsDataset`` (no I/O).

        Args:
            filepath: a ratings file, directory or glob that Spark can read (local path,
                ``/Volumes/...``, ``dbfs:/...``, ``s3a://...``). Exactly one of ``filepath``
                and ``table``.
            table: a table name as ``spark.read.table`` takes it (``catalog.schema.table``).
            format: the file's layout, a key of ``recsys_kedro.data.ratings.RATINGS_FORMATS``.
                Ignored for a table.
            rating_range: inclusive ``[low, high]`` every rating must lie in.
            columns: for a table, canonical name (``user_id``, ``item_id``, ``rating``,
                ``timestamp``) -> table column name.
            metadata: any arbitrary metadata; ignored by Kedro, available to plugins.

        Raises:
            DatasetError: not exactly one of filepath/table, an unknown format, a bad
                ``rating_range`` or ``columns`` key.
        """
        if (filepath is None) == (table is None):
            raise DatasetError(
                "RatingsDataset needs exactly one of `filepath:` (a ratings file) and "
                f"`table:` (a Spark / Unity Catalog table); got filepath={filepath!r}, "
                f"table={table!r}."
            )
        if filepath is not None and format not in RATINGS_FORMATS:
            raise DatasetError(
                f"RatingsDataset: unknown `format: {format}`; known formats: "
                f"{', '.join(RATINGS_FORMATS)}."
            )
        try:
            low, high = (float(x) for x in rating_range)
        except (TypeError, ValueError):
            raise DatasetError(
                f"RatingsDataset: `rating_range:` must be [low, high], got {rating_range!r}."
            ) from None
        if low > high:
            raise DatasetError(
                f"RatingsDataset: `rating_range:` must have low <= high, got {rating_range!r}."
            )
        unknown = sorted(set(columns or {}) - set(CANONICAL_COLUMNS))
        if unknown:
            raise DatasetError(
                f"RatingsDataset: unknown key(s) {unknown} in `columns:`; the keys are "
                f"{list(CANONICAL_COLUMNS)} and the values the table's column names."
            )
        if columns and filepath is not None:
            raise DatasetError(
                "RatingsDataset: `columns:` applies to `table:` only; a file's columns "
                "are given by its `format:`."
            )
        self._filepath = os.fspath(filepath) if filepath is not None else None
        self._table = table
        self._format = format
        self._rating_range = (low, high)
        self._columns = dict(columns) if columns else None
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        if self._table is not None:
            return {
                "table": self._table,
                "columns": self._columns,
                "rating_range": list(self._rating_range),
            }
        return {
            "filepath": self._filepath,
            "format": self._format,
            "rating_range": list(self._rating_range),
        }

    def load(self) -> DataFrame:
        """The validated ratings, a lazy ``pyspark.sql.DataFrame`` (canonical schema)."""
        spark = _active_spark()
        if self._table is not None:
            return read_ratings_table(spark, self._table, self._columns, self._rating_range)
        return read_ratings(spark, self._filepath, self._format, self._rating_range)

    def save(self, data: None) -> None:
        raise DatasetError(
            f"RatingsDataset is read-only (raw ratings {self._filepath or self._table!r}); "
            "write derived data to another catalog entry."
        )

    def _exists(self) -> bool:
        if self._table is not None:
            return bool(_active_spark().catalog.tableExists(self._table))
        return _path_exists(self._filepath)


def _active_spark() -> SparkSession:
    from pyspark.sql import SparkSession

    return SparkSession.builder.getOrCreate()


def _path_exists(path: str) -> bool:
    """Whether ``path`` (a file, directory or glob) exists, via fsspec; else ask Spark."""
    try:
        from fsspec.core import url_to_fs

        fs, fs_path = url_to_fs(path)
        if _GLOB_CHARS & set(fs_path):
            return bool(fs.glob(fs_path))
        return bool(fs.exists(fs_path))
    except Exception:
        # no fsspec filesystem for this protocol (dbfs:/, a Hadoop-only scheme), a missing
        # optional package or no credentials here: let Spark list the path with the
        # cluster's own configuration
        from pyspark.errors import AnalysisException

        try:
            _active_spark().read.format("binaryFile").load(path).schema  # noqa: B018
        except AnalysisException:
            return False
        return True
