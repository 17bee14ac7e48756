"""``ClickLogsDataset``: click logs in the Criteo layout (tab-separated files, parquet or a table)
as a Spark DataFrame, read only when a pipeline asks for them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kedro.io.core import AbstractDataset, DatasetError

from recsys_kedro.datasets.interactions_dataset import _active_spark, _path_exists

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

FORMATS = ("tsv", "parquet")


class ClickLogsDataset(AbstractDataset[None, "DataFrame | None"]):
    """Raw click logs as a lazy Spark DataFrame (read-only); ``None`` when nothing is there
    yet, so a pipeline that generates its data (``dlrm.data.source: generator``) runs with the
    entry unused. The layout is checked by the pipeline (``recsys_kedro.data.criteo``).

    * ``format: tsv`` (default): Criteo's files, tab-separated, no header (a file, a folder or
      a glob; compressed files too); loaded as ``value`` (one line) and ``_file``.
    * ``format: parquet``: files with columns ``label``, ``dense_0``.., ``sparse_0``..
    * ``table``: a Spark / Unity Catalog table with those columns.

    .. code-block:: yaml

        dlrm.raw_click_logs:
          type: recsys_kedro.datasets.click_logs_dataset.ClickLogsDataset
          filepath: data/01_raw/criteo/day_*.tsv

        dlrm.raw_click_logs_uc:
          type: recsys_kedro.datasets.click_logs_dataset.ClickLogsDataset
          table: main.ads.click_logs
    """

    def __init__(
        self,
        *,
        filepath: str | None = None,
        table: str | None = None,
        format: str = "tsv",  # noqa: A002 (the catalog's word)
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """
        Raises:
            DatasetError: not exactly one of filepath/table, or an unknown format.
        """
        if (filepath is None) == (table is None):
            raise DatasetError(
                "ClickLogsDataset needs exactly one of `filepath` (files) or `table`"
            )
        if format not in FORMATS:
            raise DatasetError(f"ClickLogsDataset format {format!r} is not one of {FORMATS}")
        self._filepath, self._table, self._format = filepath, table, format
        self.metadata = metadata

    @property
    def source(self) -> str:
        """What the pipeline's errors name: the files or the table."""
        return f"table {self._table}" if self._table else f"{self._format} {self._filepath}"

    def _describe(self) -> dict[str, Any]:
        if self._table is not None:
            return {"table": self._table}
        return {"filepath": self._filepath, "format": self._format}

    def load(self) -> DataFrame | None:
        if not self._exists():
            return None
        from pyspark.sql import functions as F

        spark = _active_spark()
        if self._table is not None:  # no file order: the rows need an `order_by` column
            return spark.table(self._table).withColumn("_file", F.lit(None).cast("string"))
        if self._format == "parquet":
            return spark.read.parquet(self._filepath).withColumn("_file", F.input_file_name())
        return spark.read.text(self._filepath).withColumn("_file", F.input_file_name())

    def save(self, data: None) -> None:
        raise DatasetError(
            f"ClickLogsDataset is read-only ({self.source}); write derived data to another "
            "catalog entry"
        )

    def _exists(self) -> bool:
        if self._table is not None:
            return bool(_active_spark().catalog.tableExists(self._table))
        return _path_exists(self._filepath)
