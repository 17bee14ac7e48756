"""write_mds: Spark DataFrame -> MDS folder, checked by reading every sample back."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
from pyspark.sql import types as T

from recsys_kedro.mds import (
    MDSExportError,
    MDSFolder,
    count_mds_samples,
    is_remote_path,
    read_mds_columns,
    to_mosaic_uri,
    write_mds,
)
from recsys_kedro.mds import writer as writer_module

COLUMNS = {"user_idx": "int64", "item_idx": "int64", "label": "int32", "rating": "float32"}

SCHEMA = T.StructType(
    [
        T.StructField("user_idx", T.LongType()),
        T.StructField("item_idx", T.LongType()),
        T.StructField("label", T.IntegerType()),
        T.StructField("rating", T.FloatType()),
        T.StructField("extra", T.StringType()),
    ]
)


def make_rows(n: int, seed: int = 0) -> list[tuple]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        rating = rng.randint(1, 10) / 2  # exact in float32
        # Duplicates on purpose: the comparison is of multisets, not sets.
        rows.append((rng.randint(0, 20), rng.randint(0, 30), int(rating >= 3.5), rating, "x"))
    return rows


def make_frame(spark, n: int, seed: int = 0):
    return spark.createDataFrame(make_rows(n, seed), schema=SCHEMA)


def sorted_rows_from_mds(folder: MDSFolder) -> list[tuple]:
    arrays = read_mds_columns(folder)
    assert list(arrays) == list(COLUMNS)
    assert arrays["user_idx"].dtype == np.int64
    assert arrays["label"].dtype == np.int32
    assert arrays["rating"].dtype == np.float32
    return sorted(zip(*(arrays[name].tolist() for name in COLUMNS), strict=True))


def sorted_rows_from_spark(df) -> list[tuple]:
    pdf = df.select(*COLUMNS).toPandas()
    return sorted(zip(*(pdf[name].tolist() for name in COLUMNS), strict=True))


def test_round_trip_local(spark, tmp_path):
    df = make_frame(spark, 300)
    path = str(tmp_path / "mds" / "train")

    folder = write_mds(df, path=path, columns=COLUMNS, num_partitions=3, size_limit=1024)

    assert folder == MDSFolder(remote=None, local=path, num_samples=300, columns=COLUMNS)
    assert count_mds_samples(path) == df.count() == 300
    assert sorted_rows_from_mds(folder) == sorted_rows_from_spark(df)
    # One sub-folder per Spark partition, merged into one index; small shards -> several.
    index = json.loads((tmp_path / "mds" / "train" / "index.json").read_text())
    assert len({shard["raw_data"]["basename"].split("/")[0] for shard in index["shards"]}) == 3
    assert len(index["shards"]) > 3
    assert {shard["compression"] for shard in index["shards"]} == {"zstd"}


def test_round_trip_without_compression(spark, tmp_path):
    df = make_frame(spark, 40, seed=1)
    folder = write_mds(df, path=str(tmp_path / "plain"), columns=COLUMNS, compression=None)
    assert folder.num_samples == 40
    assert sorted_rows_from_mds(folder) == sorted_rows_from_spark(df)


def test_overwrite_replaces_previous_export(spark, tmp_path):
    path = str(tmp_path / "mds")
    write_mds(make_frame(spark, 10, seed=2), path=path, columns=COLUMNS, num_partitions=2)
    first_subfolders = {p for p in os.listdir(path) if os.path.isdir(os.path.join(path, p))}

    df5 = make_frame(spark, 5, seed=3)
    folder = write_mds(df5, path=path, columns=COLUMNS, num_partitions=1)

    assert folder.num_samples == 5
    assert count_mds_samples(path) == 5
    assert sorted_rows_from_mds(folder) == sorted_rows_from_spark(df5)
    # No stale shards of the first export are left beside the new ones.
    subfolders = {p for p in os.listdir(path) if os.path.isdir(os.path.join(path, p))}
    assert len(subfolders) == 1
    assert not subfolders & first_subfolders


def test_overwrite_false_refuses_existing_folder(spark, tmp_path):
    path = str(tmp_path / "mds")
    write_mds(make_frame(spark, 10), path=path, columns=COLUMNS)
    with pytest.raises(MDSExportError, match=r"already exists.*overwrite=True") as info:
        write_mds(make_frame(spark, 5), path=path, columns=COLUMNS, overwrite=False)
    assert path in str(info.value)
    assert count_mds_samples(path) == 10  # untouched


def test_missing_column_names_column_and_columns_present(spark, tmp_path):
    df = make_frame(spark, 5).drop("label")
    with pytest.raises(MDSExportError, match="label") as info:
        write_mds(df, path=str(tmp_path / "mds"), columns=COLUMNS)
    assert "user_idx" in str(info.value)  # the columns present are listed
    assert not (tmp_path / "mds").exists()


def test_nulls_are_refused_with_column_name(spark, tmp_path):
    rows = make_rows(6)
    rows[3] = (rows[3][0], None, rows[3][2], rows[3][3], "x")
    df = spark.createDataFrame(rows, schema=SCHEMA)
    with pytest.raises(MDSExportError, match="item_idx"):
        write_mds(df, path=str(tmp_path / "mds"), columns=COLUMNS)
    assert not (tmp_path / "mds").exists()


def test_nulls_in_unselected_column_are_fine(spark, tmp_path):
    rows = [(*row[:4], None) for row in make_rows(6)]
    df = spark.createDataFrame(rows, schema=SCHEMA)
    assert write_mds(df, path=str(tmp_path / "mds"), columns=COLUMNS).num_samples == 6


def test_empty_frame_is_refused(spark, tmp_path):
    df = make_frame(spark, 5).limit(0)
    with pytest.raises(MDSExportError, match="empty split.*check the split parameters"):
        write_mds(df, path=str(tmp_path / "mds"), columns=COLUMNS)


def test_type_mismatch_is_refused(spark, tmp_path):
    df = make_frame(spark, 5)
    with pytest.raises(MDSExportError, match="label"):
        write_mds(df, path=str(tmp_path / "mds"), columns={**COLUMNS, "label": "int64"})


def test_row_count_mismatch_is_detected(spark, tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "count_mds_samples", lambda path: 7)
    path = str(tmp_path / "mds")
    with pytest.raises(MDSExportError, match=r"12 rows.*7 samples") as info:
        write_mds(make_frame(spark, 12), path=path, columns=COLUMNS)
    assert path in str(info.value)


def test_remote_through_local_cache(spark, tmp_path):
    df = make_frame(spark, 120, seed=4)
    remote_dir = tmp_path / "remote" / "train"
    remote_uri = remote_dir.as_uri()  # file:///...
    cache = str(tmp_path / "cache" / "train")

    folder = write_mds(df, path=remote_uri, columns=COLUMNS, local_cache=cache, num_partitions=2)

    assert folder.remote == str(remote_dir)
    assert folder.local == cache
    assert folder.num_samples == 120
    assert count_mds_samples(remote_uri) == count_mds_samples(str(remote_dir)) == 120
    # The shards really are in the "remote", not only in the cache.
    remote_files = [f for _, _, files in os.walk(remote_dir) for f in files]
    assert "index.json" in remote_files
    assert any(f.endswith(".mds.zstd") for f in remote_files)
    assert sorted_rows_from_mds(folder) == sorted_rows_from_spark(df)

    # Re-running replaces both the remote folder and the cache.
    df2 = make_frame(spark, 30, seed=5)
    folder2 = write_mds(df2, path=remote_uri, columns=COLUMNS, local_cache=cache)
    assert folder2.num_samples == count_mds_samples(cache) == 30
    assert sorted_rows_from_mds(folder2) == sorted_rows_from_spark(df2)


def test_remote_needs_local_cache(spark, tmp_path):
    with pytest.raises(MDSExportError, match="local_cache"):
        write_mds(make_frame(spark, 3), path=(tmp_path / "r").as_uri(), columns=COLUMNS)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data/05_model_input/mds/train", False),
        ("/tmp/mds/train", False),
        ("/Volumes/main/recsys/mds/train", True),
        ("/dbfs/mnt/mds/train", True),
        ("dbfs:/Volumes/main/recsys/mds/train", True),
        ("s3://bucket/mds/train", True),
        ("file:///tmp/mds/train", True),
    ],
)
def test_is_remote_path(path, expected):
    assert is_remote_path(path) is expected


def test_to_mosaic_uri():
    assert to_mosaic_uri("file:///tmp/mds") == "/tmp/mds"
    assert to_mosaic_uri("s3://bucket/mds") == "s3://bucket/mds"
    assert to_mosaic_uri("/Volumes/a/b/c") == "/Volumes/a/b/c"


def test_count_mds_samples_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        count_mds_samples(str(tmp_path / "nothing"))


def test_mds_folder_is_picklable():
    import pickle

    folder = MDSFolder(remote="s3://b/mds", local="/tmp/cache", num_samples=3, columns=COLUMNS)
    assert pickle.loads(pickle.dumps(folder)) == folder
    assert folder.source == "s3://b/mds"
