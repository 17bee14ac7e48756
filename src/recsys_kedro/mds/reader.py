"""Open MDS folders written by :func:`recsys_kedro.mds.write_mds`.

* :func:`make_streaming_dataset` builds a Mosaic ``StreamingDataset`` for training processes.
* :func:`read_mds_columns` reads a small folder into column arrays in this process, without
  ``StreamingDataset`` (no shared memory, no distributed partitioning): for tests and small
  evaluation jobs.

Mosaic shared memory: every ``StreamingDataset`` alive at the same time needs its own local
directory. Datasets are made under
:func:`recsys_kedro.mds.shared_memory.claiming_prefixes` (the trainer's claim, or one of
:func:`make_streaming_dataset`'s own), which gives each run prefixes of its own and removes
only those of runs that are gone (never Mosaic's ``clean_stale_shared_memory()``, which
unlinks live runs' too).
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys_kedro.mds.shared_memory import claimed_datasets
from recsys_kedro.mds.writer import INDEX_BASENAME, MDSFolder, _fs_and_path, _read_index

if TYPE_CHECKING:
    from streaming import StreamingDataset

# MDS encodings decoded as one NumPy scalar per sample.
_NUMERIC_ENCODINGS = {
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
}


class MDSCacheError(RuntimeError):
    """Raised when a local MDS cache holds another export than the folder being opened."""


def _check_cache_matches(remote: str, local: str) -> None:
    """Refuse a local cache whose ``index.json`` differs from the remote one.

    Mosaic uses a cached ``index.json`` as is, so a cache left by an earlier export would
    silently serve the old shards.
    """
    cached = os.path.join(local, INDEX_BASENAME)
    if not os.path.exists(cached):
        return
    with open(cached) as f:
        cached_index = f.read()
    fs, root = _fs_and_path(remote)
    with fs.open(f"{root.rstrip('/')}/{INDEX_BASENAME}", "r") as f:
        remote_index = f.read()
    if cached_index != remote_index:
        raise MDSCacheError(
            f"The local cache {local} holds another MDS export than {remote}: empty it or "
            "pass a fresh `local_cache_dir`."
        )


def make_streaming_dataset(
    folder: MDSFolder,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    local_cache_dir: str | None = None,
    dataset_cls: type[StreamingDataset] | None = None,
    **kwargs: Any,
) -> StreamingDataset:
    """A Mosaic ``StreamingDataset`` over ``folder``.

    * Local folder (``folder.remote is None``): read in place
      (``StreamingDataset(local=folder.local, remote=None)``), or, if ``local_cache_dir`` is
      given, copied shard by shard into it (``remote=folder.local``) - useful when several
      datasets over the same folder are alive at once (each needs its own local directory).
    * Remote folder: ``StreamingDataset(remote=folder.remote, local=local_cache_dir or
      folder.local)``. A cache holding another export's ``index.json`` raises
      :class:`MDSCacheError`.

    Args:
        folder: The MDS folder.
        batch_size: Per-rank batch size (Mosaic uses it to partition samples across ranks).
        shuffle: Whether to shuffle samples.
        seed: Shuffle seed (``shuffle_seed``).
        local_cache_dir: Local directory for this dataset's cache (see above).
        dataset_cls: A ``StreamingDataset`` subclass to build instead (e.g.
            :class:`recsys_kedro.mds.block_loader.BlockStreamingDataset`).
        **kwargs: Passed to ``StreamingDataset`` (``predownload``, ``num_canonical_nodes``,
            ``shuffle_algo``, ``shuffle_block_size``, ...).
    """
    from streaming import StreamingDataset

    if folder.remote is None:
        if local_cache_dir is None or os.path.abspath(local_cache_dir) == os.path.abspath(
            folder.local
        ):
            remote, local = None, folder.local
        else:
            remote, local = folder.local, local_cache_dir
    else:
        remote, local = folder.remote, local_cache_dir or folder.local
    if remote is not None:
        _check_cache_matches(remote, local)
    # Prefixes of this process's (or run's) own, also beside other runs on the machine; inside
    # the trainer's claim this joins it.
    with claimed_datasets() as claim:
        dataset = (dataset_cls or StreamingDataset)(
            remote=remote,
            local=local,
            batch_size=batch_size,
            shuffle=shuffle,
            shuffle_seed=seed,
            **kwargs,
        )
        claim.record([dataset])
    return dataset


def _to_array(values: list[Any], encoding: str) -> np.ndarray:
    if encoding in _NUMERIC_ENCODINGS:
        return np.asarray(values, dtype=np.dtype(encoding))
    if encoding.startswith("ndarray") and values:
        shapes = {np.shape(v) for v in values}
        if len(shapes) == 1:
            return np.stack(values)
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def read_mds_columns(folder: MDSFolder) -> dict[str, np.ndarray]:
    """Read every sample of a (small) MDS folder into one array per column, in index order.

    Reads from ``folder.remote`` when set (the authoritative copy), else ``folder.local``,
    through fsspec; shards are decompressed into a temporary directory and decoded with
    Mosaic's ``MDSReader``. Numeric columns come back with their MDS dtype, ``ndarray``
    columns stacked when all shapes agree, everything else as object arrays.
    """
    from streaming.base.compression import decompress
    from streaming.base.format import reader_from_json

    source = folder.source
    index = _read_index(source)
    fs, root = _fs_and_path(source)
    root = root.rstrip("/")
    shards = index.get("shards", [])
    if shards:
        names = list(shards[0]["column_names"])
        encodings = dict(zip(names, shards[0]["column_encodings"], strict=True))
    else:
        names, encodings = list(folder.columns), dict(folder.columns)
    # Keep the caller's column order where it names the same columns.
    if set(folder.columns) == set(names):
        names = list(folder.columns)
    values: dict[str, list[Any]] = {name: [] for name in names}

    with tempfile.TemporaryDirectory(prefix="read_mds_") as tmp:
        for shard in shards:
            if shard.get("format") != "mds":
                raise ValueError(f"{source}: unsupported shard format {shard.get('format')!r}")
            raw_basename = shard["raw_data"]["basename"]
            if shard.get("zip_data"):
                zipped = fs.cat_file(f"{root}/{shard['zip_data']['basename']}")
                data = decompress(shard["compression"], zipped)
            else:
                data = fs.cat_file(f"{root}/{raw_basename}")
            raw_path = os.path.join(tmp, raw_basename)
            os.makedirs(os.path.dirname(raw_path), exist_ok=True)
            with open(raw_path, "wb") as f:
                f.write(data)
            reader = reader_from_json(tmp, None, shard)
            for i in range(reader.samples):
                sample = reader.get_item(i)
                for name in names:
                    values[name].append(sample[name])
            os.remove(raw_path)

    return {name: _to_array(values[name], encodings[name]) for name in names}


def read_mds_rows(folder: MDSFolder, columns: list[str]) -> dict[str, np.ndarray]:
    """Scalar ``columns`` of every row of a folder, one 1-D array each, in index order.

    Works for both layouts: a block-layout folder's per-block arrays are concatenated, so a
    caller sees rows either way (for validation masks and evaluation of small-to-medium
    splits; the whole columns are held in memory).

    Raises:
        KeyError: if a column is not in the folder (the message lists those it has).
    """
    _check_scalar_columns(folder, columns)
    return _scalar_rows(folder, read_mds_columns(folder), columns)


def _check_scalar_columns(folder: MDSFolder, columns: list[str]) -> None:
    from recsys_kedro.mds.block_format import BLOCK_ID, BLOCK_ROWS

    available = [n for n in folder.columns if n not in (BLOCK_ID, BLOCK_ROWS) and "__" not in n]
    missing = [c for c in columns if c not in available]
    if missing:
        raise KeyError(
            f"{folder.source} has no column(s) {missing}; its scalar columns are {available}"
        )


def _scalar_rows(
    folder: MDSFolder, data: dict[str, np.ndarray], columns: list[str]
) -> dict[str, np.ndarray]:
    """``columns`` of :func:`read_mds_columns`' ``data`` as rows; the row count checked."""
    out: dict[str, np.ndarray] = {}
    for name in columns:
        values = data[name]
        if folder.layout == "block":
            parts = list(values) if values.dtype == object or values.ndim == 2 else [values]
            out[name] = np.concatenate(parts) if parts else np.zeros(0)
        else:
            out[name] = np.asarray(values)
    if folder.num_rows is not None and columns and out[columns[0]].size != folder.num_rows:
        raise ValueError(
            f"{folder.source}: read {out[columns[0]].size} rows, the index says "
            f"{folder.num_rows}: the folder is incomplete or was rewritten while being read"
        )
    return out


def read_mds_layout_columns(
    folder: MDSFolder, scalar: list[str], jagged: list[str] = ()
) -> dict[str, np.ndarray]:
    """Every row of a block-layout folder as loader-style columns: each ``scalar`` column
    whole, each ``jagged`` feature as ``<name>__values`` (concatenated) and
    ``<name>__lengths`` (one per row), in index order (held in memory: for validation).

    Raises:
        ValueError: a row-layout folder asked for jagged features (they need blocks).
    """
    from recsys_kedro.mds.block_format import lengths_column, values_column

    scalar = list(scalar)
    _check_scalar_columns(folder, scalar)
    if jagged and folder.layout != "block":
        raise ValueError(f"{folder.source}: jagged features {list(jagged)} need the block layout")
    data = read_mds_columns(folder)  # once: scalar and jagged columns come from one read
    out = _scalar_rows(folder, data, scalar)
    for name in jagged:
        for column in (values_column(name), lengths_column(name)):
            if column not in data:
                raise KeyError(f"{folder.source} has no jagged feature {name!r} ({column})")
            parts = list(data[column])
            out[column] = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return out
