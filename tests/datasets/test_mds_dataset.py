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


# --- block layout ---------------------------------------------------------------------------

BLOCK_COLUMNS = {"user_idx": "int64", "item_idx": "int64", "label": "int32"}


def make_block_frame(spark, n: int):
    rows = [(i, 3 * i, i % 2, [i % 5] * (i % 3)) for i in range(n)]
    return spark.createDataFrame(
        rows, "user_idx long, item_idx long, label int, genres array<int>"
    ).repartition(2)


def test_block_layout_save_load(spark, tmp_path, monkeypatch):
    from recsys_kedro.datasets import mds_dataset as mds_dataset_module
    from recsys_kedro.mds.block_format import block_mds_columns

    path = str(tmp_path / "mds" / "blocks")
    catalog = DataCatalog.from_config(
        {
            "model_input.train_blocks": {
                "type": "recsys_kedro.datasets.mds_dataset.MDSDataset",
                "filepath": path,
                "layout": "block",
                "block_rows": 8,
                "columns": BLOCK_COLUMNS,
                "jagged": {"genres": "int32"},
            }
        }
    )
    catalog.save("model_input.train_blocks", make_block_frame(spark, 50))

    # The row count comes from the sidecar: no shard is read on load.
    monkeypatch.setattr(mds_dataset_module, "count_block_rows", lambda path: -1)
    folder = catalog.load("model_input.train_blocks")
    assert folder.layout == "block"
    assert folder.num_rows == 50
    assert folder.jagged == ("genres",)
    assert folder.columns == block_mds_columns(BLOCK_COLUMNS, {"genres": "int32"})
    assert (folder.remote, folder.local) == (None, path)
    arrays = read_mds_columns(folder)
    assert folder.num_samples == len(arrays["_n_rows"]) >= 7  # 2 partitions of 25 rows
    assert max(arrays["_n_rows"]) == 8
    users = sorted(u for block in arrays["user_idx"] for u in block.tolist())
    assert users == list(range(50))
    index_files = os.listdir(path)
    assert "index.json" in index_files and "recsys_kedro.json" in index_files
    # Not compressed by default in the block layout.
    assert not [f for _, _, files in os.walk(path) for f in files if f.endswith(".zstd")]

    # Without the sidecar, load counts the rows from the shards.
    monkeypatch.undo()
    os.remove(os.path.join(path, "recsys_kedro.json"))
    assert catalog.load("model_input.train_blocks").num_rows == 50


def test_layouts_do_not_load_each_other(spark, tmp_path):
    row_path, block_path = str(tmp_path / "rows"), str(tmp_path / "blocks")
    MDSDataset(filepath=row_path, columns=BLOCK_COLUMNS).save(make_block_frame(spark, 10))
    block = MDSDataset(filepath=block_path, columns=BLOCK_COLUMNS, layout="block", block_rows=4)
    block.save(make_block_frame(spark, 10))

    row_folder = MDSDataset(filepath=row_path, columns=BLOCK_COLUMNS).load()
    assert (row_folder.layout, row_folder.num_rows, row_folder.jagged) == ("row", 10, ())
    assert row_folder.num_samples == 10
    with pytest.raises(DatasetError, match="export pipeline again"):
        MDSDataset(filepath=row_path, columns=BLOCK_COLUMNS, layout="block").load()
    with pytest.raises(DatasetError, match="export pipeline again"):
        MDSDataset(filepath=block_path, columns=BLOCK_COLUMNS).load()
    assert block.load().num_rows == 10


def test_block_layout_export_errors_become_dataset_errors(spark, tmp_path):
    dataset = MDSDataset(
        filepath=str(tmp_path / "mds"),
        columns=BLOCK_COLUMNS,
        layout="block",
        jagged={"genres": "int64"},  # array<int> in Spark
    )
    with pytest.raises(DatasetError, match="genres"):
        dataset.save(make_block_frame(spark, 5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layout": "blocks"}, "layout"),
        ({"jagged": {"genres": "int32"}}, "layout: block"),
        ({"layout": "block", "block_rows": 0}, "block_rows"),
        ({"layout": "block", "columns": {"user_idx": "ndarray:int64"}}, "ndarray:int64"),
        ({"layout": "block", "columns": {"_block_id": "int64"}}, "reserved"),
    ],
)
def test_block_layout_bad_configuration(kwargs, match, tmp_path):
    with pytest.raises(DatasetError, match=match):
        MDSDataset(**{"filepath": str(tmp_path), "columns": BLOCK_COLUMNS, **kwargs})


def test_describe_and_compression_defaults():
    row = MDSDataset(filepath="data/rows", columns=COLUMNS)
    block = MDSDataset(
        filepath="data/blocks", columns=BLOCK_COLUMNS, layout="block", jagged={"g": "int32"}
    )
    assert row._describe()["compression"] == "zstd"
    assert row._describe()["layout"] == "row"
    described = block._describe()
    assert described["compression"] is None
    assert (described["layout"], described["block_rows"]) == ("block", 4096)
    assert described["jagged"] == {"g": "int32"}
    explicit = MDSDataset(filepath="d", columns=BLOCK_COLUMNS, layout="block", compression="zstd")
    assert explicit._describe()["compression"] == "zstd"
    assert (
        MDSDataset(filepath="d", columns=COLUMNS, compression=None)._describe()["compression"]
        is None
    )


def test_block_layout_takes_columns_from_the_frame(spark, tmp_path):
    path = str(tmp_path / "from_frame")
    df = spark.createDataFrame(
        [(i, float(i) / 2, list(range(i % 3 + 1)), i % 2) for i in range(30)],
        "sparse_0 long, dense_0 float, tags array<long>, label int",
    )
    dataset = MDSDataset(filepath=path, layout="block", block_rows=8)
    dataset.save(df)
    folder = dataset.load()
    assert folder.num_rows == 30 and folder.jagged == ("tags",)
    assert folder.columns["dense_0"] == "ndarray:float32"
    assert folder.columns["tags__values"] == "ndarray:int64"
    assert dataset._describe()["columns"] == "from the DataFrame"


def test_block_layout_from_the_frame_refuses_strings_by_name(spark, tmp_path):
    df = spark.createDataFrame([(1, "a")], "sparse_0 long, title string")
    dataset = MDSDataset(filepath=str(tmp_path / "bad"), layout="block")
    with pytest.raises(DatasetError, match=r"'title' \(string\)"):
        dataset.save(df)


def test_row_layout_still_needs_columns(tmp_path):
    with pytest.raises(DatasetError, match="row layout"):
        MDSDataset(filepath=str(tmp_path / "x"))
