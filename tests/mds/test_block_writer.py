"""to_blocks / write_mds_blocks: Spark DataFrame -> block-layout MDS folder, read back."""

from __future__ import annotations

import gc
import json
import os
import random
from collections import Counter

import numpy as np
import pytest
from pyspark.sql import functions as F
from streaming import MDSWriter

from recsys_kedro.mds import (
    MDSExportError,
    MDSFolder,
    block_row_counts,
    count_block_rows,
    count_mds_samples,
    mds_index_columns,
    read_block_metadata,
    read_mds_columns,
    to_blocks,
    write_mds_blocks,
)
from recsys_kedro.mds import block_writer as block_writer_module
from recsys_kedro.mds.block_format import block_mds_columns

COLUMNS = {"user_idx": "int64", "item_idx": "int64", "label": "int32", "rating": "float32"}
JAGGED = {"genres": "int32", "history": "int64"}
SCHEMA = (
    "user_idx bigint, item_idx bigint, label int, rating float, genres array<int>, "
    "history array<bigint>, extra string"
)
BLOCK_ROWS = 7


def make_rows(n: int, seed: int = 0) -> list[tuple]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        rating = rng.randint(1, 10) / 2  # exact in float32
        genres = [rng.randint(0, 18) for _ in range(rng.choice([0, 1, 1, 2, 3]))]
        history = [rng.randint(0, 2**40) for _ in range(rng.randint(1, 4))]
        # Duplicates on purpose: the comparison is of multisets, not sets.
        rows.append(
            (
                rng.randint(0, 20),
                rng.randint(0, 30),
                int(rating >= 3.5),
                rating,
                genres,
                history,
                "x",
            )
        )
    return rows


def make_frame(spark, n: int, seed: int = 0, partitions: int = 3):
    return spark.createDataFrame(make_rows(n, seed), schema=SCHEMA).repartition(partitions)


def spark_rows(df) -> Counter:
    rows = df.select(*COLUMNS, *JAGGED).collect()
    return Counter(
        (r.user_idx, r.item_idx, r.label, r.rating, tuple(r.genres), tuple(r.history)) for r in rows
    )


def blocks_from_folder(folder: MDSFolder) -> list[dict[str, np.ndarray]]:
    arrays = read_mds_columns(folder)
    return [{name: arrays[name][b] for name in arrays} for b in range(len(arrays["_n_rows"]))]


def split_jagged(values: np.ndarray, lengths: np.ndarray) -> list[tuple]:
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return [tuple(values[offsets[r] : offsets[r + 1]].tolist()) for r in range(len(lengths))]


def rows_of_blocks(blocks: list[dict]) -> Counter:
    """The data rows held by ``blocks``, checking every block's invariants on the way."""
    rows: Counter = Counter()
    for block in blocks:
        n = int(block["_n_rows"])
        assert 1 <= n <= BLOCK_ROWS
        for name in COLUMNS:
            assert block[name].shape == (n,)
        for name in JAGGED:
            lengths, values = block[f"{name}__lengths"], block[f"{name}__values"]
            assert lengths.shape == (n,)
            assert values.shape == (int(lengths.sum()),)
        jagged = {name: split_jagged(block[f"{name}__values"], block[f"{name}__lengths"])
                  for name in JAGGED}  # fmt: skip
        for r in range(n):
            scalars = tuple(block[name][r].item() for name in COLUMNS)
            rows[(*scalars, *(jagged[name][r] for name in JAGGED))] += 1
    return rows


@pytest.fixture
def small_arrow_batches(spark):
    """Arrow batches of 5 rows, so that blocks of 7 rows span batches."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(key)
    spark.conf.set(key, "5")
    yield
    spark.conf.set(key, previous)


def test_to_blocks_cuts_every_partition(spark, small_arrow_batches):
    df = make_frame(spark, 61, seed=1, partitions=3).withColumn("partition", F.spark_partition_id())
    sizes = {r["partition"]: r["count"] for r in df.groupBy("partition").count().collect()}
    assert len(sizes) == 3

    blocks = [
        row.asDict()
        for row in to_blocks(df, columns=COLUMNS, jagged=JAGGED, block_rows=BLOCK_ROWS).collect()
    ]

    by_partition: dict[int, list[dict]] = {}
    for block in blocks:
        by_partition.setdefault(block["_block_id"] // 2**32, []).append(block)
    assert set(by_partition) == set(sizes)
    for partition, partition_blocks in by_partition.items():
        partition_blocks.sort(key=lambda b: b["_block_id"])
        ids = [b["_block_id"] - partition * 2**32 for b in partition_blocks]
        assert ids == list(range(len(partition_blocks)))
        counts = [b["_n_rows"] for b in partition_blocks]
        # Consecutive full blocks, only the partition's last one may be partial.
        size = sizes[partition]
        assert counts == [BLOCK_ROWS] * (size // BLOCK_ROWS) + (
            [size % BLOCK_ROWS] * (size % BLOCK_ROWS > 0)
        )
    arrays = [{k: np.asarray(v) for k, v in block.items()} for block in blocks]
    assert rows_of_blocks(arrays) == spark_rows(df)


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_round_trip(spark, tmp_path, compression):
    df = make_frame(spark, 100, seed=2, partitions=3)
    path = str(tmp_path / "mds" / "train")

    folder = write_mds_blocks(
        df,
        path=path,
        columns=COLUMNS,
        jagged=JAGGED,
        block_rows=BLOCK_ROWS,
        compression=compression,
        size_limit=1024,
    )

    mds_columns = block_mds_columns(COLUMNS, JAGGED)
    blocks = blocks_from_folder(folder)
    assert folder == MDSFolder(
        remote=None,
        local=path,
        num_samples=len(blocks),
        columns=mds_columns,
        layout="block",
        num_rows=100,
        jagged=("genres", "history"),
    )
    # Three partitions of ~33 rows: at least 5 blocks each, partial ones among them.
    assert len(blocks) >= 15
    assert any(int(b["_n_rows"]) < BLOCK_ROWS for b in blocks)
    assert count_mds_samples(path) == len(blocks)
    assert mds_index_columns(path) == mds_columns
    ids = [int(b["_block_id"]) for b in blocks]
    assert len(set(ids)) == len(ids)
    for block in blocks:
        assert block["user_idx"].dtype == np.int64
        assert block["label"].dtype == np.int32
        assert block["rating"].dtype == np.float32
        assert block["genres__values"].dtype == np.int32
        assert block["genres__lengths"].dtype == np.int32
        assert block["history__values"].dtype == np.int64
    assert rows_of_blocks(blocks) == spark_rows(df)
    assert any(length == 0 for b in blocks for length in b["genres__lengths"])

    # The _n_rows decoder agrees with Mosaic's reader; the sidecar describes the folder.
    np.testing.assert_array_equal(block_row_counts(path), [int(b["_n_rows"]) for b in blocks])
    assert count_block_rows(path) == 100
    assert read_block_metadata(path) == {
        "layout": "block",
        "num_rows": 100,
        "num_blocks": len(blocks),
        "block_rows": BLOCK_ROWS,
        "columns": COLUMNS,
        "jagged": JAGGED,
    }
    index = json.loads((tmp_path / "mds" / "train" / "index.json").read_text())
    assert len(index["shards"]) > 3  # small shards: the decoder walks several
    assert {shard["compression"] for shard in index["shards"]} == {compression}


def test_streaming_dataset_iterates_the_blocks(spark, tmp_path):
    from streaming import StreamingDataset

    from recsys_kedro.mds.shared_memory import claimed_datasets

    folder = write_mds_blocks(
        make_frame(spark, 40, seed=3, partitions=2),
        path=str(tmp_path / "blocks_for_streaming"),
        columns=COLUMNS,
        jagged=JAGGED,
        block_rows=BLOCK_ROWS,
    )
    gc.collect()
    with claimed_datasets():  # prefixes of this process's own, beside other runs
        dataset = StreamingDataset(local=folder.local, remote=None, batch_size=1)
    try:
        assert len(dataset) == folder.num_samples
        samples = list(dataset)
        assert len(samples) == folder.num_samples
        assert sum(int(s["_n_rows"]) for s in samples) == folder.num_rows == 40
        assert len({int(s["_block_id"]) for s in samples}) == folder.num_samples
        for sample in samples:
            assert sample["user_idx"].shape == (int(sample["_n_rows"]),)
            assert sample["genres__lengths"].dtype == np.int32
    finally:
        del dataset
        gc.collect()


def test_row_count_mismatch_is_detected(spark, tmp_path, monkeypatch):
    monkeypatch.setattr(block_writer_module, "count_block_rows", lambda path: 11)
    path = str(tmp_path / "mds")
    with pytest.raises(MDSExportError, match=r"12 rows but the \d+ blocks written hold 11") as info:
        write_mds_blocks(make_frame(spark, 12), path=path, columns=COLUMNS, block_rows=5)
    assert path in str(info.value)
    assert read_block_metadata(path) is None  # no sidecar for a failed export


def test_nulls_in_scalar_column_are_refused(spark, tmp_path):
    rows = make_rows(6)
    rows[3] = (rows[3][0], None, *rows[3][2:])
    df = spark.createDataFrame(rows, schema=SCHEMA)
    with pytest.raises(MDSExportError, match="item_idx"):
        write_mds_blocks(df, path=str(tmp_path / "mds"), columns=COLUMNS, jagged=JAGGED)
    assert not (tmp_path / "mds").exists()


@pytest.mark.parametrize("bad", [None, [1, None]])
def test_null_lists_and_null_elements_are_refused(spark, tmp_path, bad):
    rows = make_rows(6)
    rows[2] = (*rows[2][:4], bad, *rows[2][5:])
    df = spark.createDataFrame(rows, schema=SCHEMA)
    with pytest.raises(MDSExportError, match="genres") as info:
        write_mds_blocks(df, path=str(tmp_path / "mds"), columns=COLUMNS, jagged=JAGGED)
    assert "history" not in str(info.value)
    assert not (tmp_path / "mds").exists()


def test_to_blocks_refuses_null_lists_when_run(spark):
    rows = make_rows(6)
    rows[2] = (*rows[2][:4], None, *rows[2][5:])
    blocks = to_blocks(spark.createDataFrame(rows, schema=SCHEMA), columns=COLUMNS, jagged=JAGGED)
    with pytest.raises(Exception, match="jagged column 'genres' holds 1 null lists"):
        blocks.collect()


def test_block_with_only_empty_lists_is_refused(spark, tmp_path):
    rows = [(*row[:4], [], *row[5:]) for row in make_rows(6)]
    df = spark.createDataFrame(rows, schema=SCHEMA).coalesce(1)
    with pytest.raises(MDSExportError, match="empty list in 'genres__values'"):
        write_mds_blocks(df, path=str(tmp_path / "mds"), columns=COLUMNS, jagged=JAGGED)


def test_empty_frame_is_refused(spark, tmp_path):
    df = make_frame(spark, 5).limit(0)
    with pytest.raises(MDSExportError, match="empty split.*check the split parameters"):
        write_mds_blocks(df, path=str(tmp_path / "mds"), columns=COLUMNS, jagged=JAGGED)
    assert not (tmp_path / "mds").exists()


def test_overwrite(spark, tmp_path):
    path = str(tmp_path / "mds")
    write_mds_blocks(make_frame(spark, 30, seed=4), path=path, columns=COLUMNS, block_rows=4)
    with pytest.raises(MDSExportError, match=r"already exists.*overwrite=True") as info:
        write_mds_blocks(make_frame(spark, 5), path=path, columns=COLUMNS, overwrite=False)
    assert path in str(info.value)
    assert count_block_rows(path) == 30  # untouched

    df = make_frame(spark, 9, seed=5, partitions=1)
    folder = write_mds_blocks(df, path=path, columns=COLUMNS, jagged=JAGGED, block_rows=4)
    assert (folder.num_samples, folder.num_rows) == (3, 9)
    assert count_mds_samples(path) == 3
    assert rows_of_blocks(blocks_from_folder(folder)) == spark_rows(df)
    assert read_block_metadata(path)["num_rows"] == 9
    # No stale shards of the first export (three partitions) are left.
    assert len([p for p in os.listdir(path) if os.path.isdir(os.path.join(path, p))]) == 1


def test_remote_through_local_cache(spark, tmp_path):
    remote_dir = tmp_path / "remote" / "train"
    cache = str(tmp_path / "cache" / "train")
    df = make_frame(spark, 25, seed=6, partitions=2)

    folder = write_mds_blocks(
        df,
        path=remote_dir.as_uri(),
        columns=COLUMNS,
        jagged=JAGGED,
        local_cache=cache,
        block_rows=BLOCK_ROWS,
    )

    assert (folder.remote, folder.local, folder.num_rows) == (str(remote_dir), cache, 25)
    assert read_block_metadata(remote_dir.as_uri())["num_rows"] == 25
    assert count_block_rows(str(remote_dir)) == 25
    assert rows_of_blocks(blocks_from_folder(folder)) == spark_rows(df)
    with pytest.raises(MDSExportError, match="local_cache"):
        write_mds_blocks(df, path=(tmp_path / "r").as_uri(), columns=COLUMNS)


def test_dtypes_without_a_spark_type(spark, tmp_path):
    rows = [(i, i * 300, i / 4, [i % 256, 255]) for i in range(20)]
    df = spark.createDataFrame(rows, "a bigint, b int, c float, d array<int>")
    folder = write_mds_blocks(
        df,
        path=str(tmp_path / "mds"),
        columns={"a": "uint64", "b": "uint16", "c": "float16"},
        jagged={"d": "uint8"},
        block_rows=6,
    )
    blocks = blocks_from_folder(folder)
    assert [b["a"].dtype for b in blocks] == [np.uint64] * len(blocks)
    a = np.concatenate([b["a"] for b in blocks])
    order = np.argsort(a)
    np.testing.assert_array_equal(a[order], np.arange(20, dtype=np.uint64))
    b = np.concatenate([blk["b"] for blk in blocks])[order]
    assert b.dtype == np.uint16
    np.testing.assert_array_equal(b, np.arange(20) * 300)
    c = np.concatenate([blk["c"] for blk in blocks])[order]
    assert c.dtype == np.float16
    np.testing.assert_array_equal(c, np.arange(20) / 4)
    d = np.concatenate([blk["d__values"] for blk in blocks])
    assert d.dtype == np.uint8
    assert sorted(d.tolist()) == sorted([i % 256 for i in range(20)] + [255] * 20)

    too_big = spark.createDataFrame([(1, [256])], "a bigint, d array<int>")
    with pytest.raises(MDSExportError, match=r"'d' holds values in \[256, 256\].*uint8"):
        write_mds_blocks(
            too_big, path=str(tmp_path / "big"), columns={"a": "uint64"}, jagged={"d": "uint8"}
        )


def test_type_mismatches_are_refused(spark, tmp_path):
    df = make_frame(spark, 5)
    path = str(tmp_path / "mds")
    with pytest.raises(MDSExportError, match="'label' is int in Spark but int64"):
        write_mds_blocks(df, path=path, columns={**COLUMNS, "label": "int64"})
    with pytest.raises(MDSExportError, match="jagged column 'label' must be an array"):
        write_mds_blocks(df, path=path, columns={"user_idx": "int64"}, jagged={"label": "int32"})
    with pytest.raises(MDSExportError, match="elements of jagged column 'history'"):
        write_mds_blocks(df, path=path, columns=COLUMNS, jagged={"history": "int32"})
    with pytest.raises(MDSExportError, match=r"Column\(s\) \['score'\]"):
        write_mds_blocks(df, path=path, columns={**COLUMNS, "score": "float32"})
    assert not (tmp_path / "mds").exists()


@pytest.mark.parametrize("block_rows", [0, -3, 2.5, True])
def test_bad_block_rows(block_rows, tmp_path):
    # Checked before the DataFrame is looked at.
    with pytest.raises(MDSExportError, match="block_rows"):
        write_mds_blocks(None, path=str(tmp_path), columns=COLUMNS, block_rows=block_rows)
    with pytest.raises(MDSExportError, match="block_rows"):
        to_blocks(None, columns=COLUMNS, block_rows=block_rows)


@pytest.mark.parametrize(
    ("columns", "jagged", "match"),
    [
        ({"user_idx": "int128"}, None, "int128"),
        ({"_secret": "int64"}, None, "reserved"),
        ({"genres": "int32"}, {"genres": "int32"}, "both scalar and jagged"),
        ({}, None, "at least one column"),
    ],
)
def test_bad_columns(columns, jagged, match, tmp_path):
    with pytest.raises(MDSExportError, match=match):
        write_mds_blocks(None, path=str(tmp_path), columns=columns, jagged=jagged)


def test_block_row_counts_decoder(tmp_path):
    """The _n_rows decoder on shards with variable-size columns before and after _n_rows."""
    # "Score" sorts before "_n_rows" in the shard (MDS sorts columns by name).
    columns = block_mds_columns({"Score": "float32", "item": "int64"}, {"tags": "int16"})
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 50, size=40).astype(np.int32)
    for compression in (None, "zstd"):
        path = tmp_path / str(compression)
        with MDSWriter(
            out=str(path), columns=columns, compression=compression, size_limit=4096
        ) as writer:
            for block_id, n in enumerate(counts):
                lengths = rng.integers(1, 3, size=n).astype(np.int32)
                writer.write(
                    {
                        "Score": rng.random(n).astype(np.float32),
                        "item": rng.integers(0, 1000, size=n),
                        "tags__values": np.ones(lengths.sum(), dtype=np.int16),
                        "tags__lengths": lengths,
                        "_block_id": np.int64(block_id),
                        "_n_rows": np.int32(n),
                    }
                )
        index = json.loads((path / "index.json").read_text())
        assert len(index["shards"]) > 2
        np.testing.assert_array_equal(block_row_counts(str(path)), counts)
        assert count_block_rows(str(path)) == int(counts.sum())


def test_block_row_counts_refuses_row_layout(tmp_path):
    with MDSWriter(out=str(tmp_path / "rows"), columns={"user_idx": "int64"}) as writer:
        writer.write({"user_idx": np.int64(1)})
    with pytest.raises(ValueError, match="not a block-layout MDS folder"):
        block_row_counts(str(tmp_path / "rows"))
