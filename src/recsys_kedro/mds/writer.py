"""Write a Spark DataFrame as a Mosaic MDS folder (one sample per row) and check the result.

This wraps :func:`streaming.base.converters.dataframe_to_mds`; it adds what a pipeline needs
around it: exact column selection, null / empty / type checks before any shard is written,
a clean overwrite of a previous export, and a row-count check against the merged index.

``streaming`` is imported lazily: importing it pulls in torchvision and transformers (seconds).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

INDEX_BASENAME = "index.json"
#: The content hash Mosaic's writer records for every shard in ``index.json``: what a training
#: run's fingerprint identifies the data by (the same rows with other labels are other data).
SHARD_HASH = "sha256"

# Paths without a URL scheme that are nevertheless shared storage (FUSE mounts) on Databricks:
# Unity Catalog volumes and the legacy DBFS mount. They are written through a local cache.
_MOUNTED_REMOTE_PREFIXES = ("/Volumes/", "/dbfs/")


@dataclass(frozen=True)
class MDSFolder:
    """Where an MDS dataset lives and what it holds (picklable; handed to training processes).

    Attributes:
        remote: The shared copy, as Mosaic ``streaming`` expects it (``s3://...``,
            ``dbfs:/Volumes/...``, a FUSE path such as ``/Volumes/...``; a ``file://`` URI is
            stored as its plain path), or ``None`` for a purely local folder.
        local: The data itself when ``remote`` is ``None``; otherwise Mosaic's local cache.
        num_samples: Number of MDS samples in the merged index (rows in the ``row`` layout,
            blocks of rows in the ``block`` layout).
        columns: MDS column name -> MDS encoding, e.g. ``{"user_idx": "int64"}``.
        layout: ``"row"`` (one sample per row) or ``"block"`` (one sample per block of rows,
            one ndarray per column; see :mod:`recsys_kedro.mds.block_format`).
        num_rows: Number of data rows (``num_samples`` in the row layout).
        jagged: Names of multi-valued columns (block layout: ``<name>__values`` and
            ``<name>__lengths`` arrays).
    """

    remote: str | None
    local: str
    num_samples: int
    columns: dict[str, str]
    layout: str = "row"
    num_rows: int | None = None
    jagged: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.layout not in ("row", "block"):
            raise ValueError(f"layout must be 'row' or 'block', got {self.layout!r}")
        if self.num_rows is None:
            if self.layout == "block":
                raise ValueError("a block-layout MDSFolder needs num_rows")
            object.__setattr__(self, "num_rows", self.num_samples)

    @property
    def source(self) -> str:
        """The authoritative location of the data: ``remote`` if set, else ``local``."""
        return self.remote if self.remote is not None else self.local


class MDSExportError(RuntimeError):
    """Raised when a DataFrame cannot be (or was not correctly) exported to MDS."""


def is_remote_path(path: str) -> bool:
    """Whether ``path`` names shared storage that Mosaic should reach through a local cache.

    True for any URI with a scheme (``s3://``, ``gs://``, ``abfss://``, ``dbfs:/``,
    ``file://``) and for the Databricks FUSE mounts ``/Volumes/...`` and ``/dbfs/...``;
    False for plain local paths.
    """
    if path.startswith(_MOUNTED_REMOTE_PREFIXES):
        return True
    scheme = urlparse(path).scheme
    # A one-letter scheme is a Windows drive letter ("C:\\..."), not a URI.
    return len(scheme) > 1


def to_mosaic_uri(path: str) -> str:
    """Return ``path`` in a form Mosaic's uploaders and downloaders accept.

    Mosaic has no ``file`` scheme: it copies between plain local paths instead, so a
    ``file://`` URI becomes its path. Everything else is returned unchanged.
    """
    parsed = urlparse(path)
    if parsed.scheme == "file":
        return parsed.path or "/"
    return path


def _fs_and_path(path: str):
    import fsspec

    return fsspec.core.url_to_fs(path)


def _read_index(path: str) -> dict:
    """Read the (merged) ``index.json`` of the MDS folder at ``path`` (local or fsspec URI)."""
    fs, root = _fs_and_path(path)
    index_path = f"{root.rstrip('/')}/{INDEX_BASENAME}"
    if not fs.exists(index_path):
        raise FileNotFoundError(f"No MDS index at {path.rstrip('/')}/{INDEX_BASENAME}")
    with fs.open(index_path, "r") as f:
        return json.load(f)


def count_mds_samples(path: str) -> int:
    """Number of samples recorded in the (merged) ``index.json`` of the MDS folder at ``path``.

    ``path`` may be a local folder or any fsspec URI. Raises ``FileNotFoundError`` when the
    folder has no index.
    """
    index = _read_index(path)
    return int(sum(shard["samples"] for shard in index.get("shards", [])))


def mds_index_columns(path: str) -> dict[str, str]:
    """MDS column name -> encoding as recorded in the folder's index (``{}`` if no shards)."""
    for shard in _read_index(path).get("shards", []):
        return dict(zip(shard["column_names"], shard["column_encodings"], strict=True))
    return {}


def _is_non_empty(path: str) -> bool:
    """Whether ``path`` (local or fsspec URI) exists and holds anything."""
    fs, root = _fs_and_path(path)
    if not fs.exists(root):
        return False
    if not fs.isdir(root):
        return True
    return bool(fs.ls(root, detail=False))


def _remove(path: str) -> None:
    fs, root = _fs_and_path(path)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _check_columns(df: DataFrame, columns: Mapping[str, str]) -> None:
    missing = [name for name in columns if name not in df.columns]
    if missing:
        raise MDSExportError(
            f"Column(s) {missing} requested for the MDS export are not in the DataFrame; "
            f"columns present: {df.columns}"
        )


def _check_types(df: DataFrame, columns: Mapping[str, str]) -> None:
    """Check the Spark types against the MDS encodings the way ``dataframe_to_mds`` will."""
    from streaming.base.converters.dataframe_to_mds import infer_dataframe_schema

    try:
        infer_dataframe_schema(df, dict(columns))
    except ValueError as exc:
        schema = {f.name: f.dataType.simpleString() for f in df.schema.fields}
        raise MDSExportError(
            f"The DataFrame's column types do not match the MDS encodings: {exc}. "
            f"Spark types: {schema}; requested encodings: {dict(columns)}. Cast the column in "
            "the node that builds the split (e.g. int64 <- LongType, int32 <- IntegerType, "
            "float32 <- FloatType, float64 <- DoubleType)."
        ) from exc


def _count_rows_and_nulls(df: DataFrame, names: list[str]) -> tuple[int, dict[str, int]]:
    """Row count and per-column null counts in one Spark job."""
    from pyspark.sql import functions as F

    aggs = [F.count(F.lit(1)).alias("__rows__")]
    aggs += [F.count(df[name]).alias(f"__nonnull_{i}__") for i, name in enumerate(names)]
    row = df.agg(*aggs).collect()[0]
    rows = int(row["__rows__"])
    nulls = {name: rows - int(row[f"__nonnull_{i}__"]) for i, name in enumerate(names)}
    return rows, nulls


def _refuse_empty_or_nulls(path: str, rows: int, nulls: Mapping[str, int]) -> None:
    """Raise :class:`MDSExportError` for an empty frame or for columns holding nulls."""
    if rows == 0:
        raise MDSExportError(
            f"Refusing to write an empty split to {path}: the DataFrame has 0 rows; "
            "check the split parameters (and the filters before them)."
        )
    with_nulls = {name: n for name, n in nulls.items() if n}
    if with_nulls:
        raise MDSExportError(
            f"Column(s) {sorted(with_nulls)} hold null values ({with_nulls} of {rows} rows); "
            "MDS cannot encode nulls: fill or filter them before the export."
        )


def _resolve_output(
    path: str, local_cache: str | None
) -> tuple[str | None, str, str | tuple[str, str]]:
    """``(mosaic_remote, local, out)`` for writing the MDS folder ``path``.

    ``out`` is what Mosaic's writers take: the local folder, or ``(local_cache, remote)`` for
    shared storage (which therefore needs ``local_cache``).
    """
    if is_remote_path(path):
        if not local_cache:
            raise MDSExportError(
                f"The MDS folder {path} is on shared storage: pass `local_cache`, a local "
                "folder (e.g. /local_disk0/mds_cache/<name>) through which it is written."
            )
        mosaic_remote = to_mosaic_uri(path)
        local = os.path.abspath(local_cache)
        if os.path.abspath(mosaic_remote) == local and "://" not in mosaic_remote:
            raise MDSExportError(
                f"`local_cache` ({local_cache}) must differ from the MDS folder ({path})."
            )
        return mosaic_remote, local, (local, mosaic_remote)
    local = os.path.abspath(path)
    return None, local, local


def _clear_output(path: str, local: str, *, overwrite: bool) -> None:
    """Remove a previous export at ``path`` (or refuse to, without ``overwrite``) and empty
    the local cache ``local`` of a remote ``path``."""
    if _is_non_empty(path):
        if not overwrite:
            raise MDSExportError(
                f"The MDS folder {path} already exists. Remove it, or set overwrite=True "
                "(the dataset's `overwrite: true`) to replace it."
            )
        logger.info("Removing the previous MDS export at %s", path)
        _remove(path)
    if is_remote_path(path) and os.path.exists(local):
        # A cache of the previous export: Mosaic refuses a non-empty local folder, and stale
        # shards there would be read instead of the new ones.
        logger.info("Emptying the MDS local cache %s", local)
        shutil.rmtree(local)


def write_mds(
    df: DataFrame,
    *,
    path: str,
    columns: Mapping[str, str],
    local_cache: str | None = None,
    compression: str | None = "zstd",
    num_partitions: int | None = None,
    overwrite: bool = True,
    size_limit: str | int = "64mb",
) -> MDSFolder:
    """Write ``df`` to the MDS folder ``path``, one sample per row, and verify the row count.

    Args:
        df: The rows to export.
        path: Output folder: a local path, or shared storage (any URI with a scheme, or a
            ``/Volumes/...`` / ``/dbfs/...`` FUSE path), which needs ``local_cache``.
        columns: MDS column name -> MDS encoding; exactly these columns are written.
        local_cache: Local folder through which a remote ``path`` is written (Mosaic's
            ``out=(local, remote)``); it is emptied before writing. Ignored for a local ``path``.
        compression: Shard compression (``"zstd"``, ``None``, ...).
        num_partitions: Repartition ``df`` to this many Spark partitions first (one MDS
            sub-folder is written per partition).
        overwrite: Remove an existing ``path`` first; if ``False`` an existing, non-empty
            ``path`` raises :class:`MDSExportError`.
        size_limit: Shard size limit (bytes or a string such as ``"64mb"``).

    Returns:
        The written :class:`MDSFolder`.

    Raises:
        MDSExportError: a missing column, a type that does not match its encoding, nulls, an
            empty DataFrame, an existing folder with ``overwrite=False``, a remote ``path``
            without ``local_cache``, or a sample count that differs from the row count.
    """
    from streaming.base.converters.dataframe_to_mds import dataframe_to_mds

    columns = dict(columns)
    if not columns:
        raise MDSExportError("write_mds needs at least one column in `columns`")
    started = time.perf_counter()

    mosaic_remote, local, out = _resolve_output(path, local_cache)

    # Everything that can be checked before writing is checked before touching the output.
    _check_columns(df, columns)
    selected = df.select(*[df[name] for name in columns])
    _check_types(selected, columns)
    rows, nulls = _count_rows_and_nulls(selected, list(columns))
    _refuse_empty_or_nulls(path, rows, nulls)

    _clear_output(path, local, overwrite=overwrite)

    if num_partitions is not None:
        selected = selected.repartition(num_partitions)

    mds_kwargs = {
        "out": out,
        "columns": columns,
        "compression": compression,
        "size_limit": size_limit,
        "hashes": [SHARD_HASH],
    }
    dataframe_to_mds(selected, merge_index=True, mds_kwargs=mds_kwargs)

    written = count_mds_samples(path)
    if written != rows:
        raise MDSExportError(
            f"MDS export to {path} is incomplete: the DataFrame has {rows} rows but the MDS "
            f"index records {written} samples."
        )
    seconds = time.perf_counter() - started
    logger.info("Wrote %d rows to the MDS folder %s in %.1f s", rows, path, seconds)
    return MDSFolder(remote=mosaic_remote, local=local, num_samples=written, columns=columns)
