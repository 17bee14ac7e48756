"""MDSDataset: Kedro save/load/exists/describe around write_mds."""

from __future__ import annotations

import os

import pytest
from kedro.io import DataCatalog
from kedro.io.core import DatasetError

from recsys_kedro.datasets.mds_dataset import MDSDataset
from recsys_kedro.mds import MDSFolder, read_mds_columns

COLUMNS = {"user_idx": "int64", "item_idx": "int64", "label": "int32", "rating": "float32"}


def make_frame(spark, n: int):
    rows = [(i, 3 * i, i % 2, i / 2) for i in range(n)]
    return spark.createDataFrame(rows, "user_idx long, item_idx long, label int, rating float")


def test_construction_touches_nothing(tmp_path):
    path = tmp_path / "not" / "there"
    dataset = MDSDataset(filepath=str(path), columns=COLUMNS)
    # A remote folder without local_cache is only an error when used.
    MDSDataset(filepath="/Volumes/main/recsys/mds/two_tower/train", columns=COLUMNS)
    MDSDataset(filepath="s3://bucket/mds/train", columns=COLUMNS)
    assert not (tmp_path / "not").exists()
    assert not dataset.exists()


def test_describe():
    dataset = MDSDataset(
        filepath="/Volumes/main/recsys/mds/two_tower/train",
        columns=COLUMNS,
        local_cache="/local_disk0/mds_cache/train",
        num_partitions=8,
    )
    description = dataset._describe()
    assert description["filepath"] == "/Volumes/main/recsys/mds/two_tower/train"
    assert description["local_cache"] == "/local_disk0/mds_cache/train"
    assert description["columns"] == COLUMNS
    assert description["num_partitions"] == 8
    assert "two_tower/train" in repr(dataset)


def test_save_load_exists_local(spark, tmp_path):
    path = str(tmp_path / "mds" / "train")
    dataset = MDSDataset(filepath=path, columns=COLUMNS, num_partitions=2)
    assert not dataset.exists()
    df = make_frame(spark, 50)

    dataset.save(df)

    assert dataset.exists()
    folder = dataset.load()
    assert folder == MDSFolder(remote=None, local=path, num_samples=50, columns=COLUMNS)
    assert sorted(read_mds_columns(folder)["item_idx"].tolist()) == [3 * i for i in range(50)]

    # Saving again replaces the folder (overwrite defaults to True).
    dataset.save(make_frame(spark, 8))
    assert dataset.load().num_samples == 8


def test_load_missing_folder(tmp_path):
    dataset = MDSDataset(filepath=str(tmp_path / "missing"), columns=COLUMNS)
    with pytest.raises(DatasetError, match="run the export pipeline first") as info:
        dataset.load()
    assert str(tmp_path / "missing") in str(info.value)


def test_remote_without_local_cache_fails_on_use(spark, tmp_path):
    dataset = MDSDataset(filepath=(tmp_path / "remote").as_uri(), columns=COLUMNS)
    with pytest.raises(DatasetError, match="local_cache"):
        dataset.load()
    with pytest.raises(DatasetError, match="local_cache"):
        dataset.save(make_frame(spark, 3))
    volume = MDSDataset(filepath="/Volumes/main/recsys/mds/two_tower/train", columns=COLUMNS)
    with pytest.raises(DatasetError, match="local_cache"):
        volume.load()


def test_save_load_remote_via_catalog(spark, tmp_path):
    remote_dir = tmp_path / "remote" / "train"
    cache = str(tmp_path / "cache" / "train")
    catalog = DataCatalog.from_config(
        {
            "model_input.train_mds": {
                "type": "recsys_kedro.datasets.mds_dataset.MDSDataset",
                "filepath": remote_dir.as_uri(),
                "local_cache": cache,
                "columns": COLUMNS,
            }
        }
    )
    catalog.save("model_input.train_mds", make_frame(spark, 40))

    folder = catalog.load("model_input.train_mds")
    assert folder == MDSFolder(remote=str(remote_dir), local=cache, num_samples=40, columns=COLUMNS)
    assert os.path.exists(remote_dir / "index.json")
    assert sorted(read_mds_columns(folder)["user_idx"].tolist()) == list(range(40))


def test_overwrite_false_and_column_mismatch(spark, tmp_path):
    path = str(tmp_path / "mds")
    MDSDataset(filepath=path, columns=COLUMNS).save(make_frame(spark, 5))

    with pytest.raises(DatasetError, match="already exists"):
        MDSDataset(filepath=path, columns=COLUMNS, overwrite=False).save(make_frame(spark, 5))

    other = MDSDataset(filepath=path, columns={"user_idx": "int64", "item_idx": "int64"})
    with pytest.raises(DatasetError, match="export pipeline again"):
        other.load()


def test_export_errors_become_dataset_errors(spark, tmp_path):
    dataset = MDSDataset(filepath=str(tmp_path / "mds"), columns={**COLUMNS, "score": "float32"})
    with pytest.raises(DatasetError, match="score"):
        dataset.save(make_frame(spark, 5))
