"""Write a Spark DataFrame as a block-layout MDS folder (one MDS sample per block of rows).

The layout is specified in :mod:`recsys_kedro.mds.block_format`. The blocks are cut inside the
Spark partitions (``mapInArrow``, vectorised with pyarrow/numpy) and written by Mosaic's
:func:`streaming.base.converters.dataframe_to_mds` from the executors: no row goes through the
driver.

* :func:`to_blocks` turns a row DataFrame into a DataFrame with one row per block.
* :func:`write_mds_blocks` checks the input, writes the blocks and verifies the row count by
  reading the ``_n_rows`` of every block back from the written shards.
* :func:`block_row_counts` / :func:`count_block_rows` read those ``_n_rows`` back;
  :func:`read_block_metadata` reads the small sidecar (``recsys_kedro.json``) that
  :func:`write_mds_blocks` leaves beside ``index.json``.

Block ids: ``_block_id = spark_partition_id * 2**32 + block number within the partition``
(:data:`BLOCK_ID_STRIDE`); unique within the folder, not contiguous.

Quirk of MDS: an ``ndarray`` column cannot hold an empty array (Mosaic's encoder refuses
0-element arrays), so a block in which every row of a jagged column is an empty list cannot be
written; :func:`write_mds_blocks` raises :class:`MDSExportError` naming the column. Empty lists
in some rows of a block are fine.

Compression: block folders are written uncompressed by default. Measured here (2M rows of
int64, int64, int32 in 490 blocks of 4,096 rows; ``StreamingDataset`` iterating every block in
one process): uncompressed 40.0 MB, read in 0.50 s in place and 0.48 s through a fresh local
cache (~4M rows/s); zstd 12.7 MB, 0.64 s on the first read in place (Mosaic decompresses each
shard beside its zip, so the folder then holds both) and 0.69-0.75 s through a fresh cache
(~2.8M rows/s). Pass ``compression="zstd"`` where the network, not the CPU, is the bottleneck.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys_kedro.mds.block_format import (
    BLOCK_ID,
    BLOCK_ROWS,
    block_mds_columns,
    lengths_column,
    values_column,
)
from recsys_kedro.mds.writer import (
    SHARD_HASH,
    MDSExportError,
    MDSFolder,
    _check_columns,
    _clear_output,
    _fs_and_path,
    _read_index,
    _refuse_empty_or_nulls,
    _resolve_output,
    count_mds_samples,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

#: ``_block_id = partition_id * BLOCK_ID_STRIDE + block number within the partition``.
BLOCK_ID_STRIDE = 2**32
#: Sidecar JSON written beside ``index.json`` (layout, rows, blocks, block_rows, columns).
SIDECAR_BASENAME = "recsys_kedro.json"
#: Shard compression of block-layout folders unless told otherwise (measured: module docs).
DEFAULT_BLOCK_COMPRESSION: str | None = None

# Errors raised inside Spark tasks carry this prefix, so that the driver can find the message
# in the Python traceback Spark wraps it in and re-raise it as an MDSExportError.
_TASK_ERROR = "[recsys_kedro block export] "

# numpy dtype -> (Spark type names accepted as input, Spark type that carries it in blocks).
# Spark has no unsigned types and no float16: those travel in the next wider Spark type and are
# cast to their dtype when written (unsigned values are range-checked).
_INTEGRAL = ("byte", "short", "int", "bigint")
_SPARK_TYPES: dict[str, tuple[tuple[str, ...], str]] = {
    "int8": (("byte",), "byte"),
    "int16": (("short",), "short"),
    "int32": (("int",), "int"),
    "int64": (("bigint",), "bigint"),
    "uint8": (_INTEGRAL, "short"),
    "uint16": (_INTEGRAL, "int"),
    "uint32": (_INTEGRAL, "bigint"),
    "uint64": (_INTEGRAL, "bigint"),
    "float16": (("float",), "float"),
    "float32": (("float",), "float"),
    "float64": (("double",), "double"),
}
_ARROW_CARRIER = {"byte": "int8", "short": "int16", "int": "int32", "bigint": "int64",
                  "float": "float32", "double": "float64"}  # fmt: skip


def _task_error(message: str) -> ValueError:
    return ValueError(_TASK_ERROR + message)


def _validate(
    columns: Mapping[str, str], jagged: Mapping[str, str], block_rows: int
) -> dict[str, str]:
    if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)):
        raise MDSExportError(f"block_rows must be an integer >= 1, got {block_rows!r}")
    if block_rows < 1:
        raise MDSExportError(f"block_rows must be >= 1, got {block_rows}")
    if not columns and not jagged:
        raise MDSExportError("The block layout needs at least one column (scalar or jagged)")
    try:
        return block_mds_columns(columns, jagged)
    except ValueError as exc:
        raise MDSExportError(str(exc)) from exc


def _check_block_types(df: DataFrame, columns: Mapping[str, str], jagged: Mapping[str, str]):
    from pyspark.sql.types import ArrayType

    problems = []
    for name, dtype in {**columns, **jagged}.items():
        spark_type = df.schema[name].dataType
        accepted = _SPARK_TYPES[dtype][0]
        if name in jagged:
            if not isinstance(spark_type, ArrayType):
                problems.append(
                    f"jagged column {name!r} must be an array column, not "
                    f"{spark_type.simpleString()}"
                )
                continue
            spark_type = spark_type.elementType
        if spark_type.simpleString() not in accepted:
            what = "elements of jagged column" if name in jagged else "column"
            problems.append(
                f"{what} {name!r} is {spark_type.simpleString()} in Spark but {dtype} was "
                f"requested (accepted Spark types: {', '.join(accepted)})"
            )
    if problems:
        raise MDSExportError(
            "The DataFrame's column types do not match the block layout's dtypes: "
            + "; ".join(problems)
            + ". Cast the column in the node that builds the split (int64 <- bigint, "
            "int32 <- int, float32 <- float, float64 <- double)."
        )


_NUMPY_OF_SPARK = {"tinyint": "int8", "smallint": "int16", "int": "int32", "bigint": "int64",
                   "float": "float32", "double": "float64"}  # fmt: skip


def block_columns_from_schema(df: DataFrame) -> tuple[dict[str, str], dict[str, str]]:
    """``(scalar columns, jagged columns)`` (name -> numpy dtype) of every column of ``df``,
    as its Spark types say: numeric columns are scalar, arrays of numbers jagged.

    Raises:
        MDSExportError: for a column of another type (strings, maps, nested arrays, ...).
    """
    from pyspark.sql.types import ArrayType

    scalar: dict[str, str] = {}
    jagged: dict[str, str] = {}
    problems = []
    for field in df.schema.fields:
        spark_type = field.dataType
        target = jagged if isinstance(spark_type, ArrayType) else scalar
        if isinstance(spark_type, ArrayType):
            spark_type = spark_type.elementType
        dtype = _NUMPY_OF_SPARK.get(spark_type.simpleString())
        if dtype is None:
            problems.append(f"{field.name!r} ({field.dataType.simpleString()})")
        else:
            target[field.name] = dtype
    if problems:
        raise MDSExportError(
            "The block layout stores numeric columns and arrays of numbers only; these "
            f"columns are neither: {', '.join(problems)}. Drop or encode them before the export."
        )
    return scalar, jagged


def _block_spark_schema(columns: Mapping[str, str], jagged: Mapping[str, str]):
    from pyspark.sql import types as T

    def array_of(dtype: str) -> T.ArrayType:
        return T.ArrayType(T._parse_datatype_string(_SPARK_TYPES[dtype][1]))

    fields = [T.StructField(name, array_of(dtype), False) for name, dtype in columns.items()]
    for name, dtype in jagged.items():
        fields.append(T.StructField(values_column(name), array_of(dtype), False))
        fields.append(T.StructField(lengths_column(name), T.ArrayType(T.IntegerType()), False))
    fields.append(T.StructField(BLOCK_ID, T.LongType(), False))
    fields.append(T.StructField(BLOCK_ROWS, T.IntegerType(), False))
    return T.StructType(fields)


def _carry(values: pa.Array, name: str, dtype: str) -> pa.Array:
    """``values`` (no nulls) in the Spark carrier type of ``dtype``, range-checked."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if dtype.startswith("uint") and len(values):
        bounds = pc.min_max(values)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low < 0 or high > np.iinfo(dtype).max:
            raise _task_error(
                f"column {name!r} holds values in [{low}, {high}], outside the range of {dtype}"
            )
    carrier = pa.type_for_alias(_ARROW_CARRIER[_SPARK_TYPES[dtype][1]])
    return values if values.type == carrier else pc.cast(values, carrier)


def _list_array(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    import pyarrow as pa

    if offsets[-1] > np.iinfo(np.int32).max:
        raise _task_error(f"a batch of blocks holds {offsets[-1]} values: use smaller blocks")
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def _blocks_batch(
    table: pa.Table,
    *,
    columns: Mapping[str, str],
    jagged: Mapping[str, str],
    block_rows: int,
    first_block_id: int,
) -> pa.RecordBatch:
    """Cut ``table`` into consecutive blocks of ``block_rows`` (the last may be smaller)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    row_offsets = np.append(np.arange(0, n, block_rows, dtype=np.int64), n)
    names, arrays = [], []
    for name, dtype in columns.items():
        column = table.column(name).combine_chunks()
        if column.null_count:
            raise _task_error(f"column {name!r} holds {column.null_count} null values")
        names.append(name)
        arrays.append(_list_array(row_offsets, _carry(column, name, dtype)))
    for name, dtype in jagged.items():
        column = table.column(name).combine_chunks()
        if column.null_count:
            raise _task_error(
                f"jagged column {name!r} holds {column.null_count} null lists (write an empty "
                "list instead)"
            )
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        flat = column.flatten()
        if flat.null_count:
            raise _task_error(f"jagged column {name!r} holds {flat.null_count} null elements")
        value_offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=value_offsets[1:])
        names += [values_column(name), lengths_column(name)]
        arrays.append(_list_array(value_offsets[row_offsets], _carry(flat, name, dtype)))
        arrays.append(_list_array(row_offsets, pa.array(lengths.astype(np.int32))))
    num_blocks = len(row_offsets) - 1
    names += [BLOCK_ID, BLOCK_ROWS]
    arrays.append(pa.array(first_block_id + np.arange(num_blocks, dtype=np.int64)))
    arrays.append(pa.array(np.diff(row_offsets).astype(np.int32)))
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _cut_partition(
    batches: Iterator[pa.RecordBatch],
    *,
    columns: Mapping[str, str],
    jagged: Mapping[str, str],
    block_rows: int,
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` function: the partition's rows -> one row per block of ``block_rows``.

    Rows are buffered across Arrow batches so that every block but the partition's last one
    is full.
    """
    import pyarrow as pa
    from pyspark import TaskContext

    context = TaskContext.get()
    next_id = (context.partitionId() if context is not None else 0) * BLOCK_ID_STRIDE
    cut = functools.partial(_blocks_batch, columns=columns, jagged=jagged, block_rows=block_rows)
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows < block_rows:
            continue
        table = pa.Table.from_batches(pending)
        full = pending_rows - pending_rows % block_rows
        yield cut(table.slice(0, full), first_block_id=next_id)
        next_id += full // block_rows
        rest = table.slice(full)
        pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield cut(pa.Table.from_batches(pending), first_block_id=next_id)


def to_blocks(
    df: DataFrame,
    *,
    columns: Mapping[str, str],
    jagged: Mapping[str, str] | None = None,
    block_rows: int = 4096,
) -> DataFrame:
    """One Spark row per block of ``block_rows`` consecutive rows of each partition of ``df``.

    Every partition is cut on its own (``mapInArrow``; nothing is shuffled or collected): all
    its blocks hold ``block_rows`` rows except its last one, which may hold fewer.

    Args:
        df: The rows.
        columns: Scalar column -> numpy dtype (``int64``, ``int32``, ``float32``, ...).
        jagged: Multi-valued column (a Spark array column, e.g. an item's category indexes) ->
            numpy dtype of its elements. A null list or null element is an error (an empty
            list is fine).
        block_rows: Rows per block (>= 1).

    Returns:
        A DataFrame with, per block: one array column per scalar column; ``<j>__values`` (the
        block's lists, concatenated) and ``<j>__lengths`` (int, one per row) per jagged column
        ``j``; ``_block_id`` (bigint, ``partition id * 2**32 + block number``); ``_n_rows``
        (int). Arrays are of the Spark type of the dtype (``bigint`` for int64, ...);
        dtypes Spark lacks travel in a wider type (uint8 -> short, uint16 -> int, uint32 and
        uint64 -> bigint, float16 -> float) and are cast when written.

    Raises:
        MDSExportError: a bad ``block_rows``, an unknown dtype, a reserved or missing column,
            a Spark type that does not match its dtype. Nulls, and unsigned values out of
            range, fail the Spark job when it runs.
    """
    columns = {str(k): str(v) for k, v in columns.items()}
    jagged = {str(k): str(v) for k, v in (jagged or {}).items()}
    _validate(columns, jagged, block_rows)
    _check_columns(df, {**columns, **jagged})
    _check_block_types(df, columns, jagged)
    selected = df.select(*[df[name] for name in {**columns, **jagged}])
    cut = functools.partial(
        _cut_partition, columns=columns, jagged=jagged, block_rows=int(block_rows)
    )
    return selected.mapInArrow(cut, _block_spark_schema(columns, jagged))


def _block_samples(pdf, *, dtypes: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    """``dataframe_to_mds`` ``udf_iterable``: block rows (pandas) -> MDS samples.

    One iteration per block, not per row: every column is one ndarray of its exact dtype.
    """
    arrays = {name: pdf[name].to_numpy() for name in dtypes}
    block_ids = pdf[BLOCK_ID].to_numpy()
    n_rows = pdf[BLOCK_ROWS].to_numpy()
    for i in range(len(pdf)):
        sample: dict[str, Any] = {BLOCK_ID: np.int64(block_ids[i]), BLOCK_ROWS: np.int32(n_rows[i])}
        for name, dtype in dtypes.items():
            array = np.asarray(arrays[name][i])
            if array.dtype != dtype:
                array = array.astype(dtype)
            if array.size == 0:
                raise _task_error(
                    f"every row of block {int(block_ids[i])} ({int(n_rows[i])} rows) has an "
                    f"empty list in {name!r}, and MDS cannot store an empty array; use larger "
                    "blocks or drop rows with empty lists"
                )
            sample[name] = array
        yield sample


def _count_rows_and_nulls(
    df: DataFrame, names: list[str], jagged: list[str]
) -> tuple[int, dict[str, int], dict[str, int]]:
    """Rows, nulls per column, and rows with null elements per jagged column: one Spark job."""
    from pyspark.sql import functions as F

    aggs = [F.count(F.lit(1)).alias("rows")]
    aggs += [F.count(df[name]).alias(f"nonnull_{i}") for i, name in enumerate(names)]
    aggs += [
        F.count(F.when(F.exists(df[name], lambda x: x.isNull()), 1)).alias(f"inner_{i}")
        for i, name in enumerate(jagged)
    ]
    row = df.agg(*aggs).collect()[0]
    rows = int(row["rows"])
    nulls = {name: rows - int(row[f"nonnull_{i}"]) for i, name in enumerate(names)}
    inner = {name: int(row[f"inner_{i}"]) for i, name in enumerate(jagged)}
    return rows, nulls, inner


def _shard_bytes(fs: Any, root: str, shard: Mapping[str, Any]) -> bytes:
    from streaming.base.compression import decompress

    if shard.get("zip_data"):
        zipped = fs.cat_file(f"{root}/{shard['zip_data']['basename']}")
        return decompress(shard["compression"], zipped)
    return fs.cat_file(f"{root}/{shard['raw_data']['basename']}")


def _gather(buffer: np.ndarray, positions: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The ``dtype`` values stored at byte ``positions`` of ``buffer`` (vectorised)."""
    window = buffer[positions[:, None] + np.arange(dtype.itemsize)]
    return np.ascontiguousarray(window).view(dtype).reshape(-1)


def _fixed_column(data: bytes, shard: Mapping[str, Any], name: str) -> np.ndarray:
    """Decode the fixed-size column ``name`` of every sample of one raw MDS shard.

    MDS shard: ``uint32 n``, ``uint32 offsets[n + 1]`` (absolute), then per sample the
    ``uint32`` sizes of its variable-size columns followed by the columns in index order.
    """
    names = list(shard["column_names"])
    sizes = list(shard["column_sizes"])
    k = names.index(name)
    dtype = np.dtype(shard["column_encodings"][k])
    if sizes[k] != dtype.itemsize:
        raise ValueError(f"column {name!r} is not a fixed-size scalar column in this shard")
    n = int(np.frombuffer(data, np.uint32, count=1)[0])
    if n != shard["samples"]:
        raise ValueError(f"shard {shard['raw_data']['basename']}: {n} samples, index says "
                         f"{shard['samples']}")  # fmt: skip
    offsets = np.frombuffer(data, np.uint32, count=n + 1, offset=4).astype(np.int64)
    if n and offsets[-1] != len(data):
        raise ValueError(f"shard {shard['raw_data']['basename']} is truncated or corrupt")
    buffer = np.frombuffer(data, np.uint8)
    positions = offsets[:-1] + 4 * sum(size is None for size in sizes)
    variable = 0
    for size in sizes[:k]:
        if size is None:
            positions = positions + _gather(buffer, offsets[:-1] + 4 * variable, np.dtype("<u4"))
            variable += 1
        else:
            positions = positions + size
    return _gather(buffer, positions, dtype)


def block_row_counts(path: str) -> np.ndarray:
    """``_n_rows`` of every block of the block-layout MDS folder ``path``, in index order.

    Reads (and decompresses, in memory) every shard of ``path`` (a local folder or any fsspec
    URI) in this process, decoding only the ``_n_rows`` column; no ``StreamingDataset``.
    """
    index = _read_index(path)
    fs, root = _fs_and_path(path)
    root = root.rstrip("/")
    counts = [np.zeros(0, dtype=np.int32)]
    for shard in index.get("shards", []):
        if shard.get("format") != "mds":
            raise ValueError(f"{path}: unsupported shard format {shard.get('format')!r}")
        if BLOCK_ROWS not in shard["column_names"]:
            raise ValueError(f"{path} is not a block-layout MDS folder (no {BLOCK_ROWS} column)")
        counts.append(_fixed_column(_shard_bytes(fs, root, shard), shard, BLOCK_ROWS))
    return np.concatenate(counts).astype(np.int32, copy=False)


def count_block_rows(path: str) -> int:
    """Number of data rows in the block-layout MDS folder ``path``: the sum of ``_n_rows``."""
    return int(block_row_counts(path).sum(dtype=np.int64))


def read_block_metadata(path: str) -> dict[str, Any] | None:
    """The sidecar ``recsys_kedro.json`` of the MDS folder ``path``, or ``None`` if absent."""
    fs, root = _fs_and_path(path)
    sidecar = f"{root.rstrip('/')}/{SIDECAR_BASENAME}"
    if not fs.exists(sidecar):
        return None
    with fs.open(sidecar, "r") as f:
        return json.load(f)


def _write_block_metadata(path: str, metadata: Mapping[str, Any]) -> None:
    fs, root = _fs_and_path(path)
    with fs.open(f"{root.rstrip('/')}/{SIDECAR_BASENAME}", "w") as f:
        json.dump(dict(metadata), f, indent=2, sort_keys=True)


def _task_message(exc: BaseException) -> str | None:
    """The message of an error raised by this module inside a Spark task, if ``exc`` is one."""
    for line in str(exc).splitlines():
        if _TASK_ERROR in line:
            return line[line.index(_TASK_ERROR) + len(_TASK_ERROR) :].strip()
    return None


def _skip_is_empty(blocks: DataFrame) -> None:
    """Answer ``dataframe_to_mds``'s ``blocks.isEmpty()`` without a Spark job.

    On the blocks DataFrame, ``isEmpty()`` (a ``limit(1)``) runs the ``mapInArrow`` of the
    first partition(s) and abandons its output; Spark then destroys those Python workers
    instead of reusing them, and the write forks fresh ones, each importing ``streaming``
    again (~7 s per task on this machine: 13 s instead of 1.5 s for a tiny export). The row
    count is already known to be > 0 when this is called.
    """
    # A DataFrame class that refuses instance attributes just keeps its isEmpty().
    with contextlib.suppress(AttributeError, TypeError):
        blocks.isEmpty = lambda: False  # type: ignore[method-assign]


def write_mds_blocks(
    df: DataFrame,
    *,
    path: str,
    columns: Mapping[str, str],
    jagged: Mapping[str, str] | None = None,
    block_rows: int = 4096,
    local_cache: str | None = None,
    compression: str | None = DEFAULT_BLOCK_COMPRESSION,
    num_partitions: int | None = None,
    overwrite: bool = True,
    size_limit: str | int = "64mb",
) -> MDSFolder:
    """Write ``df`` to the MDS folder ``path`` in the block layout and verify the row count.

    Same contract as :func:`recsys_kedro.mds.write_mds` (exact column selection, type / null /
    empty checks before anything is written, overwrite, remote folders through
    ``local_cache``), but one MDS sample holds a block of up to ``block_rows`` rows (see
    :mod:`recsys_kedro.mds.block_format` and :func:`to_blocks`). After writing, the ``_n_rows``
    of every block are read back from the written shards and their sum must equal the row
    count of ``df``. A sidecar ``recsys_kedro.json`` (layout, rows, blocks, block_rows,
    dtypes) is written beside ``index.json``; the folder stays a plain Mosaic dataset.

    Args:
        df: The rows to export.
        path: Output folder: local, or shared storage (then ``local_cache`` is required).
        columns: Scalar column -> numpy dtype (``int64``, ``int32``, ``float32``, ...).
        jagged: Multi-valued (array) column -> numpy dtype of its elements.
        block_rows: Rows per block (>= 1); each Spark partition's last block may hold fewer.
        local_cache: Local folder through which a remote ``path`` is written.
        compression: Shard compression; ``None`` (the default) or e.g. ``"zstd"``.
        num_partitions: Repartition ``df`` to this many partitions first (blocks never span
            partitions; one MDS sub-folder per partition).
        overwrite: Replace an existing ``path``; if ``False`` an existing one raises.
        size_limit: Shard size limit (bytes or e.g. ``"64mb"``).

    Returns:
        The written :class:`MDSFolder` (``layout="block"``, ``num_samples`` = blocks,
        ``num_rows`` = rows, ``columns`` = the MDS encodings, ``jagged`` = jagged names).

    Raises:
        MDSExportError: as :func:`write_mds`, plus a bad ``block_rows`` or dtype, a non-array
            jagged column, null lists or null elements in a jagged column, a block whose
            jagged column is empty in every row, and a row count that differs from the sum
            of ``_n_rows`` read back.
    """
    from streaming.base.converters.dataframe_to_mds import dataframe_to_mds

    columns = {str(k): str(v) for k, v in columns.items()}
    jagged = {str(k): str(v) for k, v in (jagged or {}).items()}
    mds_columns = _validate(columns, jagged, block_rows)
    started = time.perf_counter()
    mosaic_remote, local, out = _resolve_output(path, local_cache)

    # Everything that can be checked before writing is checked before touching the output.
    names = [*columns, *jagged]
    _check_columns(df, dict.fromkeys(names, ""))
    _check_block_types(df, columns, jagged)
    selected = df.select(*[df[name] for name in names])
    rows, nulls, inner = _count_rows_and_nulls(selected, names, list(jagged))
    _refuse_empty_or_nulls(path, rows, {name: nulls[name] for name in columns})
    null_lists = {name: nulls[name] for name in jagged if nulls[name]}
    null_elements = {name: n for name, n in inner.items() if n}
    if null_lists or null_elements:
        raise MDSExportError(
            f"Jagged column(s) {sorted({**null_lists, **null_elements})} hold null lists "
            f"({null_lists}) or lists with null elements ({null_elements}) of {rows} rows; "
            "the block layout has no nulls: write an empty list for 'no values' and drop "
            "null elements before the export."
        )

    _clear_output(path, local, overwrite=overwrite)
    if num_partitions is not None:
        selected = selected.repartition(num_partitions)
    blocks = to_blocks(selected, columns=columns, jagged=jagged, block_rows=block_rows)
    _skip_is_empty(blocks)
    array_dtypes = {
        name: encoding.split(":", 1)[1]
        for name, encoding in mds_columns.items()
        if encoding.startswith("ndarray:")
    }
    mds_kwargs = {
        "out": out,
        "columns": mds_columns,
        "compression": compression,
        "size_limit": size_limit,
        "hashes": [SHARD_HASH],
    }
    try:
        # udf_iterable: samples of exact dtypes, one per block (it also skips Mosaic's
        # Spark-type check, which knows no unsigned or int8 arrays).
        dataframe_to_mds(
            blocks,
            merge_index=True,
            mds_kwargs=mds_kwargs,
            udf_iterable=_block_samples,
            udf_kwargs={"dtypes": array_dtypes},
        )
    except Exception as exc:
        message = _task_message(exc)
        if message is None:
            raise
        raise MDSExportError(f"MDS block export to {path} failed: {message}") from exc

    num_blocks = count_mds_samples(path)
    written_rows = count_block_rows(path)
    if written_rows != rows:
        raise MDSExportError(
            f"MDS block export to {path} is incomplete: the DataFrame has {rows} rows but the "
            f"{num_blocks} blocks written hold {written_rows} rows."
        )
    _write_block_metadata(
        path,
        {
            "layout": "block",
            "num_rows": rows,
            "num_blocks": num_blocks,
            "block_rows": int(block_rows),
            "columns": columns,
            "jagged": jagged,
        },
    )
    seconds = time.perf_counter() - started
    logger.info(
        "Wrote %d rows in %d blocks to the MDS folder %s in %.1f s", rows, num_blocks, path, seconds
    )
    return MDSFolder(
        remote=mosaic_remote,
        local=local,
        num_samples=num_blocks,
        columns=mds_columns,
        layout="block",
        num_rows=rows,
        jagged=tuple(jagged),
    )
