"""``InteractionsDataset``: raw interactions (rating files, event logs, parquet or a table) as a
validated Spark DataFrame."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kedro.io.core import AbstractDataset, DatasetError

from recsys_kedro.data.ratings import (
    CANONICAL_COLUMNS,
    DEFAULT_RATING_RANGE,
    GENERIC_FORMATS,
    RATINGS_FORMATS,
    TIMESTAMP_UNITS,
    read_ratings,
    read_ratings_table,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_GLOB_CHARS = frozenset("*?[")


class InteractionsDataset(AbstractDataset[None, "DataFrame"]):
    """Loads raw interactions as a Spark DataFrame with the canonical schema (read-only).

    ``user_id: string, item_id: string, rating: double, event: string, timestamp: long``
    (``rating`` null for implicit data, ``event`` the event type where the source has one,
    ``timestamp`` seconds since the epoch, UTC). The data are read lazily with the active
    SparkSession (the project's hook creates it) and checked in one Spark job; a source that
    does not match its configuration raises an error that names the file, the column, what
    is wrong (with examples) and how to fix it. See ``recsys_kedro.data.ratings``.

    A published ratings file (or a directory / glob of them); ``format`` is one of
    ``recbole_inter`` (the default: RecBole's ``ml-100k.inter``), ``ml100k_udata``
    (ml-100k ``u.data``), ``ml1m_dat`` (ml-1m ``ratings.dat``), ``ml_csv`` (ml-20m, ml-25m,
    ml-latest ``ratings.csv``) and ``lfs_item_ratings`` (Learning from Sets of Items 2019
    ``item_ratings.csv``):

    .. code-block:: yaml

        raw_interactions:
          type: recsys_kedro.datasets.interactions_dataset.InteractionsDataset
          filepath: data/01_raw/ml-100k/ml-100k.inter
          format: recbole_inter

        raw_interactions_25m:
          type: recsys_kedro.datasets.interactions_dataset.InteractionsDataset
          filepath: /Volumes/main/recsys/raw/ml-25m/ratings.csv
          format: ml_csv
          rating_range: [0.5, 5.0]

    Any delimited text file with a header (``format: csv``, every file of a folder or glob
    must have the same header) or parquet (``format: parquet``), its columns mapped to the
    canonical names where they differ; ``rating``, ``event`` and ``timestamp`` are optional,
    and the timestamp's unit is declared (``s``, ``ms``, ``us``, ``ns``, ``datetime``) or
    detected and logged (``auto``, the default):

    .. code-block:: yaml

        raw_interactions:
          type: recsys_kedro.datasets.interactions_dataset.InteractionsDataset
          filepath: data/01_raw/shop/events/*.csv
          format: csv
          columns: {user_id: visitor, item_id: sku, event: event_type, timestamp: ts}
          timestamp_unit: ms

    A Spark / Unity Catalog table (``format`` is ignored; ``columns`` as above):

    .. code-block:: yaml

        raw_interactions:
          type: recsys_kedro.datasets.interactions_dataset.InteractionsDataset
          table: main.recsys.item_ratings
          columns:
            user_id: userId
            item_id: movieId
            timestamp: tstamp

    Constructing the dataset touches neither Spark nor the file system.
    """

    def __init__(  # noqa: PLR0913
        self,
        *,
        filepath: str | None = None,
        table: str | None = None,
        format: str = "recbole_inter",
        rating_range: Sequence[float] = DEFAULT_RATING_RANGE,
        columns: dict[str, str] | None = None,
        sep: str = ",",
        timestamp_unit: str = "auto",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates a new ``InteractionsDataset`` (no I/O).

        Args:
            filepath: a file, directory or glob that Spark can read (local path,
                ``/Volumes/...``, ``dbfs:/...``, ``s3a://...``). Exactly one of ``filepath``
                and ``table``.
            table: a table name as ``spark.read.table`` takes it (``catalog.schema.table``).
            format: the file's layout, a key of ``recsys_kedro.data.ratings.RATINGS_FORMATS``,
                ``csv`` or ``parquet``. Ignored for a table.
            rating_range: inclusive ``[low, high]`` every rating must lie in.
            columns: for ``csv``, ``parquet`` and tables: canonical name (``user_id``,
                ``item_id``, ``rating``, ``event``, ``timestamp``) -> the source's column name.
            sep: ``csv`` only: the field separator.
            timestamp_unit: ``csv``, ``parquet`` and tables: how a numeric timestamp counts
                time (``s``, ``ms``, ``us``, ``ns``), ``datetime`` text, or ``auto``.
            metadata: any arbitrary metadata; ignored by Kedro, available to plugins.

        Raises:
            DatasetError: not exactly one of filepath/table, an unknown format or unit, a bad
                ``rating_range`` or ``columns`` key, or an option the source does not take.
        """
        name = type(self).__name__
        if (filepath is None) == (table is None):
            raise DatasetError(
                f"{name} needs exactly one of `filepath:` (a file, folder or glob) and "
                f"`table:` (a Spark / Unity Catalog table); got filepath={filepath!r}, "
                f"table={table!r}."
            )
        known = (*RATINGS_FORMATS, *GENERIC_FORMATS)
        if filepath is not None and format not in known:
            raise DatasetError(
                f"{name}: unknown `format: {format}`; known formats: {', '.join(known)}."
            )
        try:
            low, high = (float(x) for x in rating_range)
        except (TypeError, ValueError):
            raise DatasetError(
                f"{name}: `rating_range:` must be [low, high], got {rating_range!r}."
            ) from None
        if low > high:
            raise DatasetError(
                f"{name}: `rating_range:` must have low <= high, got {rating_range!r}."
            )
        unknown = sorted(set(columns or {}) - set(CANONICAL_COLUMNS))
        if unknown:
            raise DatasetError(
                f"{name}: unknown key(s) {unknown} in `columns:`; the keys are "
                f"{list(CANONICAL_COLUMNS)} and the values the source's column names."
            )
        if timestamp_unit not in TIMESTAMP_UNITS:
            raise DatasetError(
                f"{name}: unknown `timestamp_unit: {timestamp_unit}`; one of "
                f"{', '.join(TIMESTAMP_UNITS)}."
            )
        published = filepath is not None and format in RATINGS_FORMATS
        if published and (columns or timestamp_unit != "auto"):
            raise DatasetError(
                f"{name}: `columns:` and `timestamp_unit:` apply to `format:` "
                f"{' or '.join(GENERIC_FORMATS)} and to `table:`; the columns and units of "
                f"`format: {format}` are fixed (read the file with `format: csv` to map them)."
            )
        self._filepath = os.fspath(filepath) if filepath is not None else None
        self._table = table
        self._format = format
        self._rating_range = (low, high)
        self._columns = dict(columns) if columns else None
        self._sep = sep
        self._timestamp_unit = timestamp_unit
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        where = (
            {"table": self._table}
            if self._table is not None
            else {
                "filepath": self._filepath,
                "format": self._format,
            }
        )
        mapped = self._table is not None or self._format in GENERIC_FORMATS
        options = (
            {"columns": self._columns, "timestamp_unit": self._timestamp_unit} if mapped else {}
        )
        if self._table is None and self._format == "csv":
            options["sep"] = self._sep
        return {**where, **options, "rating_range": list(self._rating_range)}

    def load(self) -> DataFrame:
        """The validated interactions, a lazy ``pyspark.sql.DataFrame`` (canonical schema)."""
        spark = _active_spark()
        if self._table is not None:
            return read_ratings_table(
                spark, self._table, self._columns, self._rating_range, self._timestamp_unit
            )
        return read_ratings(
            spark,
            self._filepath,
            self._format,
            self._rating_range,
            columns=self._columns,
            sep=self._sep,
            timestamp_unit=self._timestamp_unit,
        )

    def save(self, data: None) -> None:
        raise DatasetError(
            f"{type(self).__name__} is read-only ({self._filepath or self._table!r}); "
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
