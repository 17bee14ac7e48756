"""``MDSDataset`` saves a Spark DataFrame as a Mosaic MDS folder and loads an ``MDSFolder``."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from kedro.io.core import AbstractDataset, DatasetError

from recsys_kedro.mds.block_format import block_columns_from_mds, block_mds_columns
from recsys_kedro.mds.block_writer import (
    DEFAULT_BLOCK_COMPRESSION,
    block_columns_from_schema,
    count_block_rows,
    read_block_metadata,
    write_mds_blocks,
)
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

logger = logging.getLogger(__name__)

LAYOUTS = ("row", "block")
# Shard compression per layout when the catalog entry sets none (``compression: null`` means
# "no compression", so the default is told apart from it by a sentinel).
_DEFAULT = object()
DEFAULT_COMPRESSION = {"row": "zstd", "block": DEFAULT_BLOCK_COMPRESSION}


class MDSDataset(AbstractDataset["DataFrame", MDSFolder]):
    """A Mosaic MDS folder written from a Spark DataFrame, one sample per row or per block.

    ``layout: row`` (the default): one MDS sample per row; ``save`` writes the DataFrame with
    :func:`recsys_kedro.mds.write_mds` (exactly the configured columns, checked for nulls and
    emptiness, row count verified against the merged index); ``columns`` are MDS encodings.

    ``layout: block``: one MDS sample per block of ``block_rows`` rows, one ndarray per column
    (:mod:`recsys_kedro.mds.block_format`); ``save`` writes with
    :func:`recsys_kedro.mds.write_mds_blocks` (the blocks are cut inside the Spark partitions;
    row count verified against the ``_n_rows`` read back); ``columns`` are the numpy dtypes of
    the scalar columns and ``jagged`` those of multi-valued (array) columns. A sidecar
    ``recsys_kedro.json`` beside ``index.json`` records the row count, so loading stays cheap.
    Block folders are not compressed unless ``compression`` says so (faster to read locally).

    ``load`` reads no data: it returns an :class:`recsys_kedro.mds.MDSFolder` (where the
    folder is, its layout, how many samples and rows, which columns) that training processes
    open themselves (:func:`recsys_kedro.mds.make_streaming_dataset` for the row layout).

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

        # Block layout: one MDS sample per 4096 rows; an item's category indexes as a jagged
        # column (a Spark array<int> column, an empty list for none).
        model_input.train_blocks:
          type: recsys_kedro.datasets.mds_dataset.MDSDataset
          filepath: data/05_model_input/mds/train_blocks
          layout: block
          block_rows: 4096
          columns: {user_idx: int64, item_idx: int64, label: int32}
          jagged: {item_categories: int32}

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
        columns: dict[str, str] | None = None,
        local_cache: str | None = None,
        compression: Any = _DEFAULT,
        num_partitions: int | None = None,
        overwrite: bool = True,
        size_limit: str | int = "64mb",
        metadata: dict[str, Any] | None = None,
        layout: str = "row",
        block_rows: int = 4096,
        jagged: dict[str, str] | None = None,
    ) -> None:
        """Create an ``MDSDataset``; touches neither Spark nor the file system.

        Args:
            filepath: The MDS folder: a local path, an fsspec/Mosaic URI or a ``/Volumes/...``
                path.
            columns: Row layout: MDS column name -> MDS encoding (``int64``, ``int32``,
                ``float32``, ...). Block layout: scalar column -> numpy dtype (same names);
                omitted (with ``jagged``), every column of the saved DataFrame is written as
                its Spark type says (numbers scalar, arrays of numbers jagged), and ``load``
                reports the columns the folder holds.
            local_cache: Local folder through which a remote ``filepath`` is written and read
                (required for remote folders; ignored for local ones).
            compression: Shard compression; ``None`` for none. Defaults to ``"zstd"`` in the
                row layout and to none in the block layout.
            num_partitions: Repartition the DataFrame to this many partitions before writing.
            overwrite: Replace an existing folder on save; if ``False`` saving over an existing
                folder fails.
            size_limit: Shard size limit (bytes or e.g. ``"64mb"``).
            metadata: Any arbitrary metadata; ignored by Kedro, for plugins and users.
            layout: ``"row"`` (one MDS sample per row) or ``"block"`` (one per block of rows).
            block_rows: Block layout: rows per block (each Spark partition's last block may
                hold fewer).
            jagged: Block layout: multi-valued (array) column -> numpy dtype of its elements.
        """
        if layout not in LAYOUTS:
            raise DatasetError(f"MDSDataset `layout` must be one of {LAYOUTS}, got {layout!r}")
        if not columns and layout == "row":
            raise DatasetError(
                "MDSDataset needs a non-empty `columns` mapping (name: encoding) in the row "
                "layout; the block layout can take them from the DataFrame"
            )
        # Block layout without columns: the saved DataFrame's schema decides.
        self._from_frame = layout == "block" and not columns and not jagged
        self._filepath = str(filepath)
        self._columns = {str(k): str(v) for k, v in dict(columns or {}).items()}
        self._layout = layout
        self._block_rows = block_rows
        self._jagged = {str(k): str(v) for k, v in dict(jagged or {}).items()}
        if layout == "row" and self._jagged:
            raise DatasetError("MDSDataset `jagged` columns need `layout: block`")
        bad_rows = isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1
        if layout == "block" and bad_rows:
            raise DatasetError(
                f"MDSDataset `block_rows` must be an integer >= 1, got {block_rows!r}"
            )
        if self._from_frame:
            self._mds_columns: dict[str, str] = {}
        elif layout == "block":
            try:
                self._mds_columns = block_mds_columns(self._columns, self._jagged)
            except ValueError as exc:
                raise DatasetError(f"MDSDataset({self._filepath}): {exc}") from exc
        else:
            self._mds_columns = dict(self._columns)
        self._local_cache = str(local_cache) if local_cache is not None else None
        self._compression = DEFAULT_COMPRESSION[layout] if compression is _DEFAULT else compression
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
        """Write ``data`` as the MDS folder (:func:`recsys_kedro.mds.write_mds`, or
        :func:`recsys_kedro.mds.write_mds_blocks` in the block layout)."""
        local_cache = self._require_local_cache("save")
        columns, jagged = self._columns, self._jagged
        if self._from_frame:
            try:
                columns, jagged = block_columns_from_schema(data)
            except MDSExportError as exc:
                raise DatasetError(f"{type(self).__name__}({self._filepath}): {exc}") from exc
        common = {
            "path": self._filepath,
            "columns": columns,
            "local_cache": local_cache,
            "compression": self._compression,
            "num_partitions": self._num_partitions,
            "overwrite": self._overwrite,
            "size_limit": self._size_limit,
        }
        try:
            if self._layout == "block":
                write_mds_blocks(data, jagged=jagged, block_rows=self._block_rows, **common)
            else:
                write_mds(data, **common)
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
        jagged = tuple(self._jagged)
        if self._from_frame:
            try:
                jagged = tuple(block_columns_from_mds(index_columns)[1])
            except ValueError as exc:
                raise DatasetError(
                    f"The MDS folder {self._filepath} is not in the block layout ({exc}): run "
                    "the export pipeline again."
                ) from exc
        elif index_columns and index_columns != self._mds_columns:
            raise DatasetError(
                f"The MDS folder {self._filepath} holds columns {index_columns}, but the "
                f"catalog declares {self._mds_columns} ({self._layout} layout): run the export "
                "pipeline again."
            )
        if self._is_remote:
            remote: str | None = to_mosaic_uri(self._filepath)
            local = os.path.abspath(local_cache)  # type: ignore[arg-type]
        else:
            remote, local = None, os.path.abspath(self._filepath)
        if self._layout == "row":
            return MDSFolder(
                remote=remote, local=local, num_samples=num_samples, columns=dict(self._columns)
            )
        return MDSFolder(
            remote=remote,
            local=local,
            num_samples=num_samples,
            columns=dict(index_columns if self._from_frame else self._mds_columns),
            layout="block",
            num_rows=self._block_folder_rows(num_samples),
            jagged=jagged,
        )

    def _block_folder_rows(self, num_blocks: int) -> int:
        """Rows of the block folder: from its sidecar when it matches the index (cheap), else
        the sum of ``_n_rows`` read from the shards."""
        metadata = read_block_metadata(self._filepath)
        if (
            metadata is not None
            and metadata.get("layout") == "block"
            and metadata.get("num_blocks") == num_blocks
            and isinstance(metadata.get("num_rows"), int)
        ):
            return metadata["num_rows"]
        logger.warning(
            "The MDS folder %s has no (matching) recsys_kedro.json sidecar: counting its rows "
            "from the shards",
            self._filepath,
        )
        return count_block_rows(self._filepath)

    def _exists(self) -> bool:
        try:
            count_mds_samples(self._filepath)
        except FileNotFoundError:
            return False
        return True

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "columns": self._columns or "from the DataFrame",
            "local_cache": self._local_cache,
            "compression": self._compression,
            "num_partitions": self._num_partitions,
            "overwrite": self._overwrite,
            "size_limit": self._size_limit,
            "layout": self._layout,
            "block_rows": self._block_rows if self._layout == "block" else None,
            "jagged": self._jagged or None,
        }
