"""``MDSDataset`` saves a Spark DataFrame as a Mosaic MDS folder and loads an ``MDSFolder``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from kedro.io.core import AbstractDataset, DatasetError

from recsys_kedro.mds.writer import (
    MDSExportError,
    MDSFolder,
    count_mds_samples,
    is_remote_path,
    mds_index_columns,
    to_mosaic_uri,
    write_mds,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


class MDSDataset(AbstractDataset["DataFrame", MDSFolder]):
    """A Mosaic MDS folder (one sample per row) written from a Spark DataFrame.

    ``save`` writes the DataFrame with :func:`recsys_kedro.mds.write_mds` (exactly the
    configured columns, checked for nulls and emptiness, row count verified against the merged
    index). ``load`` reads no data: it returns an :class:`recsys_kedro.mds.MDSFolder` (where the
    folder is, how many samples, which columns) that training processes open themselves with
    :func:`recsys_kedro.mds.make_streaming_dataset`.

    ``filepath`` is a local folder, or shared storage: any fsspec/Mosaic URI (``s3://``,
    ``gs://``, ``dbfs:/Volumes/...``) or a Databricks FUSE path (``/Volumes/...``,
    ``/dbfs/...``). Shared storage is written and read through ``local_cache``, which is then
    required.

    Example ``catalog.yml``:

    .. code-block:: yaml

        model_input.train_mds:
          type: recsys_kedro.datasets.mds_dataset.MDSDataset
          filepath: data/05_model_input/mds/train
          columns: {user_idx: int64, item_idx: int64, label: int32, rating: float32}

        # On Databricks, in a Unity Catalog volume, through the node's local disk:
        model_input.train_mds:
          type: recsys_kedro.datasets.mds_dataset.MDSDataset
          filepath: /Volumes/main/recsys/mds/two_tower/train
          local_cache: /local_disk0/mds_cache/train
          columns: {user_idx: int64, item_idx: int64, label: int32, rating: float32}
          num_partitions: 8

    Example Python API:

    .. code-block:: pycon

        >>> dataset = MDSDataset(
        ...     filepath="data/05_model_input/mds/train",
        ...     columns={"user_idx": "int64", "item_idx": "int64"},
        ... )
        >>> dataset.save(spark_df)  # doctest: +SKIP
        >>> folder = dataset.load()  # doctest: +SKIP
        >>> folder.num_samples  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        filepath: str,
        columns: dict[str, str],
        local_cache: str | None = None,
        compression: str | None = "zstd",
        num_partitions: int | None = None,
        overwrite: bool = True,
        size_limit: str | int = "64mb",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create an ``MDSDataset``; touches neither Spark nor the file system.

        Args:
            filepath: The MDS folder: a local path, an fsspec/Mosaic URI or a ``/Volumes/...``
                path.
            columns: MDS column name -> MDS encoding (``int64``, ``int32``, ``float32``, ...).
            local_cache: Local folder through which a remote ``filepath`` is written and read
                (required for remote folders; ignored for local ones).
            compression: Shard compression; ``None`` for none.
            num_partitions: Repartition the DataFrame to this many partitions before writing.
            overwrite: Replace an existing folder on save; if ``False`` saving over an existing
                folder fails.
            size_limit: Shard size limit (bytes or e.g. ``"64mb"``).
            metadata: Any arbitrary metadata; ignored by Kedro, for plugins and users.
        """
        if not columns:
            raise DatasetError("MDSDataset needs a non-empty `columns` mapping (name: encoding)")
        self._filepath = str(filepath)
        self._columns = {str(k): str(v) for k, v in dict(columns).items()}
        self._local_cache = str(local_cache) if local_cache is not None else None
        self._compression = compression
        self._num_partitions = num_partitions
        self._overwrite = overwrite
        self._size_limit = size_limit
        self.metadata = metadata

    @property
    def _is_remote(self) -> bool:
        return is_remote_path(self._filepath)

    def _require_local_cache(self, action: str) -> str | None:
        if self._is_remote and not self._local_cache:
            raise DatasetError(
                f"Cannot {action} the MDS folder {self._filepath}: it is on shared storage, "
                "so `local_cache` (a local folder, e.g. /local_disk0/mds_cache/<name>) is "
                "required in the dataset's catalog entry."
            )
        return self._local_cache

    def save(self, data: DataFrame) -> None:
        """Write ``data`` as the MDS folder (see :func:`recsys_kedro.mds.write_mds`)."""
        local_cache = self._require_local_cache("save")
        try:
            write_mds(
                data,
                path=self._filepath,
                columns=self._columns,
                local_cache=local_cache,
                compression=self._compression,
                num_partitions=self._num_partitions,
                overwrite=self._overwrite,
                size_limit=self._size_limit,
            )
        except MDSExportError as exc:
            raise DatasetError(f"{type(self).__name__}({self._filepath}): {exc}") from exc

    def load(self) -> MDSFolder:
        """Describe the exported folder (no data is read): an :class:`MDSFolder`."""
        local_cache = self._require_local_cache("load")
        try:
            num_samples = count_mds_samples(self._filepath)
            index_columns = mds_index_columns(self._filepath)
        except FileNotFoundError as exc:
            raise DatasetError(
                f"No MDS folder at {self._filepath} (no index.json there): run the export "
                "pipeline first."
            ) from exc
        if index_columns and index_columns != self._columns:
            raise DatasetError(
                f"The MDS folder {self._filepath} holds columns {index_columns}, but the "
                f"catalog declares {self._columns}: run the export pipeline again."
            )
        if self._is_remote:
            remote: str | None = to_mosaic_uri(self._filepath)
            local = os.path.abspath(local_cache)  # type: ignore[arg-type]
        else:
            remote, local = None, os.path.abspath(self._filepath)
        return MDSFolder(
            remote=remote, local=local, num_samples=num_samples, columns=dict(self._columns)
        )

    def _exists(self) -> bool:
        try:
            count_mds_samples(self._filepath)
        except FileNotFoundError:
            return False
        return True

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "columns": self._columns,
            "local_cache": self._local_cache,
            "compression": self._compression,
            "num_partitions": self._num_partitions,
            "overwrite": self._overwrite,
            "size_limit": self._size_limit,
        }
