"""make_streaming_dataset / read_mds_columns over MDS folders."""

from __future__ import annotations

import numpy as np
import pytest
from streaming import MDSWriter

from recsys_kedro.mds import (
    MDSCacheError,
    MDSFolder,
    make_streaming_dataset,
    read_mds_columns,
    write_mds,
)

COLUMNS = {"user_idx": "int64", "item_idx": "int64", "label": "int32", "rating": "float32"}


def write_folder(path, n: int, *, offset: int = 0, compression="zstd") -> MDSFolder:
    """An MDS folder written directly with Mosaic's MDSWriter (no Spark)."""
    with MDSWriter(out=str(path), columns=COLUMNS, compression=compression, size_limit=2048) as w:
        for i in range(n):
            w.write(
                {
                    "user_idx": np.int64(offset + i),
                    "item_idx": np.int64(2 * i),
                    "label": np.int32(i % 2),
                    "rating": np.float32(i / 4),
                }
            )
    return MDSFolder(remote=None, local=str(path), num_samples=n, columns=COLUMNS)


def iterate(dataset) -> dict[str, list]:
    out: dict[str, list] = {name: [] for name in COLUMNS}
    for sample in dataset:
        for name in COLUMNS:
            out[name].append(sample[name])
    return out


@pytest.mark.parametrize("compression", ["zstd", None])
def test_read_mds_columns(tmp_path, compression):
    folder = write_folder(tmp_path / "mds", 200, compression=compression)
    arrays = read_mds_columns(folder)
    assert list(arrays) == list(COLUMNS)
    np.testing.assert_array_equal(arrays["user_idx"], np.arange(200, dtype=np.int64))
    np.testing.assert_array_equal(arrays["item_idx"], 2 * np.arange(200, dtype=np.int64))
    np.testing.assert_array_equal(arrays["label"], (np.arange(200) % 2).astype(np.int32))
    np.testing.assert_array_equal(arrays["rating"], (np.arange(200) / 4).astype(np.float32))
    assert arrays["label"].dtype == np.int32
    assert arrays["rating"].dtype == np.float32


def test_streaming_dataset_local_in_place(tmp_path):
    folder = write_folder(tmp_path / "mds", 100)
    dataset = make_streaming_dataset(folder, batch_size=10, shuffle=False, seed=0)
    assert dataset.streams[0].local == folder.local
    assert dataset.streams[0].remote is None
    assert len(dataset) == 100
    assert sorted(iterate(dataset)["user_idx"]) == list(range(100))


def test_streaming_dataset_local_copied_to_own_cache(tmp_path):
    folder = write_folder(tmp_path / "mds", 100)
    cache_a, cache_b = str(tmp_path / "cache_a"), str(tmp_path / "cache_b")
    # Two datasets over one folder alive at once: each has its own local directory.
    a = make_streaming_dataset(folder, batch_size=10, shuffle=True, seed=1, local_cache_dir=cache_a)
    b = make_streaming_dataset(folder, batch_size=10, shuffle=True, seed=2, local_cache_dir=cache_b)
    order_a, order_b = iterate(a)["user_idx"], iterate(b)["user_idx"]
    assert sorted(order_a) == sorted(order_b) == list(range(100))
    assert order_a != list(range(100))  # shuffled
    assert order_a != order_b  # by different seeds


def test_streaming_dataset_from_spark_remote_export(spark, tmp_path):
    rows = [(i, i % 7, i % 2, float(i) / 2) for i in range(150)]
    df = spark.createDataFrame(rows, "user_idx long, item_idx long, label int, rating float")
    folder = write_mds(
        df,
        path=(tmp_path / "remote").as_uri(),
        columns=COLUMNS,
        local_cache=str(tmp_path / "write_cache"),
        num_partitions=2,
    )
    dataset = make_streaming_dataset(
        folder, batch_size=16, shuffle=False, seed=0, local_cache_dir=str(tmp_path / "read_cache")
    )
    assert dataset.streams[0].remote == folder.remote
    samples = iterate(dataset)
    assert sorted(samples["user_idx"]) == list(range(150))
    by_user = dict(zip(samples["user_idx"], samples["rating"], strict=True))
    assert all(by_user[i] == np.float32(i / 2) for i in range(150))

    # The cache the export was written through is consistent with the remote: usable as is.
    in_write_cache = make_streaming_dataset(folder, batch_size=16, shuffle=False, seed=0)
    assert in_write_cache.streams[0].local == folder.local
    assert sorted(iterate(in_write_cache)["user_idx"]) == list(range(150))


def test_stale_cache_is_refused(tmp_path):
    new = write_folder(tmp_path / "remote", 50)
    remote_folder = MDSFolder(
        remote=new.local, local=str(tmp_path / "cache"), num_samples=50, columns=COLUMNS
    )
    write_folder(tmp_path / "cache", 20, offset=1000)  # an older export left in the cache
    with pytest.raises(MDSCacheError, match="cache"):
        make_streaming_dataset(remote_folder, batch_size=10, shuffle=False, seed=0)


@pytest.mark.parametrize("block_rows", [7, 1000])  # several blocks of unequal size / one block
def test_read_mds_rows_of_a_block_folder_gives_every_row(spark, tmp_path, block_rows):
    from recsys_kedro.mds import read_mds_rows, write_mds_blocks

    rows = [(i, i * 3 % 11, float(i) / 2) for i in range(50)]
    df = spark.createDataFrame(rows, "user_idx long, item_idx long, rating float")
    folder = write_mds_blocks(
        df,
        path=str(tmp_path / "blocks"),
        columns={"user_idx": "int64", "item_idx": "int64", "rating": "float32"},
        block_rows=block_rows,
        num_partitions=2,
    )
    got = read_mds_rows(folder, ["user_idx", "item_idx"])
    pairs = sorted(zip(got["user_idx"].tolist(), got["item_idx"].tolist(), strict=True))
    assert pairs == sorted((u, i) for u, i, _ in rows)  # every row once
    with pytest.raises(KeyError, match="no column"):
        read_mds_rows(folder, ["label"])
