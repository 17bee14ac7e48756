"""Spark DataFrame -> Mosaic MDS folders (row or block layout), and reading them back (no Kedro)."""

from recsys_kedro.mds.block_writer import (
    block_row_counts,
    count_block_rows,
    read_block_metadata,
    to_blocks,
    write_mds_blocks,
)
from recsys_kedro.mds.reader import (
    MDSCacheError,
    make_streaming_dataset,
    read_mds_columns,
    read_mds_layout_columns,
    read_mds_rows,
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

#: Alias of :func:`read_mds_columns`: reads a small MDS folder into column arrays.
read_mds_folder = read_mds_columns

__all__ = [
    "MDSCacheError",
    "MDSExportError",
    "MDSFolder",
    "block_row_counts",
    "count_block_rows",
    "count_mds_samples",
    "is_remote_path",
    "make_streaming_dataset",
    "mds_index_columns",
    "read_block_metadata",
    "read_mds_columns",
    "read_mds_folder",
    "read_mds_layout_columns",
    "read_mds_rows",
    "to_blocks",
    "to_mosaic_uri",
    "write_mds",
    "write_mds_blocks",
]
