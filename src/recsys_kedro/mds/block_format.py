"""The block-columnar MDS layout: one MDS sample holds a block of rows, one ndarray per column.

One sample per row costs Mosaic a Python-level decode per row (~7K rows/s per process
measured here); one sample per block of a few thousand rows amortises it to nothing and lets
batches be cut with array slicing. A block-layout folder is still a plain Mosaic MDS dataset:
``StreamingDataset`` reads it, shuffles blocks, partitions them over ranks, resumes.

A block sample has these MDS columns:

* ``<column>``: ``ndarray:<dtype>``, shape ``(n,)``, for every scalar column;
* ``<column>__values``: ``ndarray:<dtype>``, shape ``(sum(lengths),)`` and
  ``<column>__lengths``: ``ndarray:int32``, shape ``(n,)``, for every jagged (multi-valued)
  column: row ``r``'s values are ``values[offsets[r]:offsets[r] + lengths[r]]`` with
  ``offsets = cumsum(lengths) - lengths``;
* ``_block_id``: ``int64``, unique within the folder (keys the within-block shuffle);
* ``_n_rows``: ``int32``, ``n``, the number of rows in the block (``1 <= n <= block_rows``).
"""

from __future__ import annotations

from collections.abc import Mapping

BLOCK_ID = "_block_id"
BLOCK_ROWS = "_n_rows"
VALUES_SUFFIX = "__values"
LENGTHS_SUFFIX = "__lengths"
SCALAR_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64")  # fmt: skip


def values_column(name: str) -> str:
    return name + VALUES_SUFFIX


def lengths_column(name: str) -> str:
    return name + LENGTHS_SUFFIX


def block_mds_columns(
    columns: Mapping[str, str], jagged: Mapping[str, str] | None = None
) -> dict[str, str]:
    """MDS encodings of a block-layout folder.

    Args:
        columns: scalar column -> numpy dtype name (``int64``, ``int32``, ``float32``, ...).
        jagged: multi-valued column -> dtype of its values.

    Returns:
        MDS column name -> MDS encoding, e.g. ``{"user_idx": "ndarray:int64", ...,
        "_block_id": "int64", "_n_rows": "int32"}``.
    """
    jagged = dict(jagged or {})
    out: dict[str, str] = {}
    for name, dtype in {**columns, **jagged}.items():
        if dtype not in SCALAR_DTYPES:
            raise ValueError(f"column {name!r}: dtype {dtype!r} is not one of {SCALAR_DTYPES}")
        if name.startswith("_") or name.endswith((VALUES_SUFFIX, LENGTHS_SUFFIX)):
            raise ValueError(f"column name {name!r} is reserved by the block layout")
    overlap = set(columns) & set(jagged)
    if overlap:
        raise ValueError(f"columns {sorted(overlap)} are both scalar and jagged")
    for name, dtype in columns.items():
        out[name] = f"ndarray:{dtype}"
    for name, dtype in jagged.items():
        out[values_column(name)] = f"ndarray:{dtype}"
        out[lengths_column(name)] = "ndarray:int32"
    out[BLOCK_ID] = "int64"
    out[BLOCK_ROWS] = "int32"
    return out


def block_columns_from_mds(mds_columns: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The inverse of :func:`block_mds_columns`: ``(scalar columns, jagged columns)``, each
    name -> numpy dtype, from a block-layout folder's MDS encodings (its ``index.json``)."""
    scalar: dict[str, str] = {}
    jagged: dict[str, str] = {}
    for name, encoding in mds_columns.items():
        if name in (BLOCK_ID, BLOCK_ROWS) or name.endswith(LENGTHS_SUFFIX):
            continue
        if not encoding.startswith("ndarray:"):
            raise ValueError(f"column {name!r} has encoding {encoding!r}: not a block layout")
        dtype = encoding.split(":", 1)[1]
        if name.endswith(VALUES_SUFFIX):
            jagged[name[: -len(VALUES_SUFFIX)]] = dtype
        else:
            scalar[name] = dtype
    return scalar, jagged
