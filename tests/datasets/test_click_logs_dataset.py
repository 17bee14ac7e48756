"""ClickLogsDataset: raw click logs read only when asked for, None when there are none."""

from __future__ import annotations

import pytest
from kedro.io.core import DatasetError

from recsys_kedro.datasets.click_logs_dataset import ClickLogsDataset


def test_nothing_there_loads_as_none(spark, tmp_path):
    dataset = ClickLogsDataset(filepath=str(tmp_path / "criteo"))
    assert not dataset.exists() and dataset.load() is None


def test_tab_separated_files_load_as_lines_with_their_file(spark, tmp_path):
    folder = tmp_path / "criteo"
    folder.mkdir()
    (folder / "day_0.tsv").write_text("1\t2\ta\n0\t\tb\n")
    dataset = ClickLogsDataset(filepath=str(folder))
    frame = dataset.load()
    assert dataset.exists() and frame.columns == ["value", "_file"]
    rows = frame.collect()
    assert [r["value"] for r in rows] == ["1\t2\ta", "0\t\tb"]
    assert all(r["_file"].endswith("day_0.tsv") for r in rows)
    assert "day" not in str(ClickLogsDataset(table="c.s.t")._describe())


def test_parquet_loads_its_columns(spark, tmp_path):
    path = str(tmp_path / "logs.parquet")
    spark.createDataFrame([(1, 2, "a")], "label int, dense_0 int, sparse_0 string").write.parquet(
        path
    )
    frame = ClickLogsDataset(filepath=path, format="parquet").load()
    assert frame.columns == ["label", "dense_0", "sparse_0", "_file"]


def test_bad_configuration_and_saving_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="exactly one of"):
        ClickLogsDataset()
    with pytest.raises(DatasetError, match="format 'csv' is not one of"):
        ClickLogsDataset(filepath="x", format="csv")
    with pytest.raises(DatasetError, match="read-only"):
        ClickLogsDataset(filepath=str(tmp_path)).save("rows")
