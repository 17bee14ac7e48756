"""RatingsDataset: a read-only Kedro dataset over recsys_kedro.data.ratings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kedro.io import DataCatalog
from kedro.io.core import AbstractDataset, DatasetError

from recsys_kedro.data.ratings import RatingsFormatError
from recsys_kedro.datasets.ratings_dataset import RatingsDataset

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ratings"
CANONICAL = "struct<user_id:string,item_id:string,rating:double,timestamp:bigint>"
TYPE = "recsys_kedro.datasets.ratings_dataset.RatingsDataset"


def test_load_reads_the_default_recbole_format(spark):
    dataset = RatingsDataset(filepath=str(FIXTURES / "ml-100k.inter"))

    df = dataset.load()

    assert df.schema.simpleString() == CANONICAL
    rows = df.filter("user_id = '196'").collect()
    assert sorted(tuple(r) for r in rows) == [
        ("196", "242", 3.0, 881250949),
        ("196", "393", 4.0, 881251863),
    ]


def test_load_from_catalog_config_with_format_and_rating_range(spark):
    catalog = DataCatalog.from_config(
        {
            "raw_ratings": {
                "type": TYPE,
                "filepath": str(FIXTURES / "ratings.csv"),
                "format": "ml_csv",
                "rating_range": [0.5, 5.0],
            }
        }
    )

    df = catalog.load("raw_ratings")

    assert df.count() == 20
    assert df.filter("rating = 0.5").count() == 3


def test_describe_names_the_source():
    file_ds = RatingsDataset(filepath="data/01_raw/u.data", format="ml100k_udata")
    table_ds = RatingsDataset(table="main.recsys.item_ratings", columns={"user_id": "userId"})

    assert file_ds._describe() == {
        "filepath": "data/01_raw/u.data",
        "format": "ml100k_udata",
        "rating_range": [0.5, 5.0],
    }
    assert table_ds._describe() == {
        "table": "main.recsys.item_ratings",
        "columns": {"user_id": "userId"},
        "rating_range": [0.5, 5.0],
    }
    assert "u.data" in str(file_ds)
    assert "main.recsys.item_ratings" in str(table_ds)


def test_exists_for_files_and_globs(tmp_path):
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n")

    assert RatingsDataset(filepath=str(tmp_path / "u.data")).exists()
    assert RatingsDataset(filepath=str(tmp_path / "*.data")).exists()
    assert RatingsDataset(filepath=str(tmp_path)).exists()
    assert not RatingsDataset(filepath=str(tmp_path / "missing.data")).exists()
    assert not RatingsDataset(filepath=str(tmp_path / "*.csv")).exists()


def test_save_is_refused():
    dataset = RatingsDataset(filepath="data/01_raw/u.data", format="ml100k_udata")
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save(object())


def test_a_malformed_file_fails_load_with_the_ratings_error(spark, tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("1::1193::5::978300760\n1::661::five::978302109\n")

    with pytest.raises(DatasetError) as info:
        RatingsDataset(filepath=str(path), format="ml1m_dat").load()

    assert isinstance(info.value.__cause__, RatingsFormatError)
    assert str(path) in str(info.value)
    assert "field 3 `Rating` (rating) is not a number" in str(info.value)


def test_table_with_a_column_mapping(spark):
    view = f"ratings_view_{uuid.uuid4().hex[:8]}"
    spark.sql(
        "SELECT * FROM VALUES "
        "(7, 100, 4.5F, TIMESTAMP '2019-03-13 16:25:31 UTC', 'x'), "
        "(7, 101, 3.0F, TIMESTAMP '2019-03-13 16:26:00 UTC', 'y'), "
        "(8, 100, 0.5F, NULL, 'z') "
        "AS t(userId, movieId, score, tstamp, comment)"
    ).createOrReplaceTempView(view)
    try:
        dataset = RatingsDataset(
            table=view,
            columns={
                "user_id": "userId",
                "item_id": "movieId",
                "rating": "score",
                "timestamp": "tstamp",
            },
        )
        assert dataset.exists()
        df = dataset.load()
        rows = sorted(tuple(r) for r in df.collect())
    finally:
        spark.catalog.dropTempView(view)

    assert df.schema.simpleString() == CANONICAL
    first = int(datetime(2019, 3, 13, 16, 25, 31, tzinfo=UTC).timestamp())
    assert rows == [
        ("7", "100", 4.5, first),
        ("7", "101", 3.0, first + 29),
        ("8", "100", 0.5, None),
    ]


def test_saved_table_and_its_errors(spark, tmp_path):
    table = f"ratings_tbl_{uuid.uuid4().hex[:8]}"
    spark.sql(
        "SELECT * FROM VALUES ('u1', 'i1', 4.0D, 1552494331L), ('u2', 'i1', 9.0D, 1552494332L) "
        "AS t(user_id, item_id, rating, timestamp)"
    ).write.option("path", str(tmp_path / table)).saveAsTable(table)
    try:
        assert RatingsDataset(table=table).exists()
        with pytest.raises(DatasetError) as info:
            RatingsDataset(table=table).load()
        assert f"table '{table}'" in str(info.value)
        assert "column `rating` (rating) is outside rating_range [0.5, 5]" in str(info.value)

        df = RatingsDataset(table=table, rating_range=[0, 10]).load()
        assert sorted(tuple(r) for r in df.collect()) == [
            ("u1", "i1", 4.0, 1552494331),
            ("u2", "i1", 9.0, 1552494332),
        ]

        with pytest.raises(DatasetError, match=r"missing column\(s\) `userId` \(user_id\)"):
            RatingsDataset(table=table, columns={"user_id": "userId"}).load()
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {table}")

    assert not RatingsDataset(table=table).exists()
    with pytest.raises(DatasetError, match="does not exist"):
        RatingsDataset(table=table).load()


def test_construction_touches_neither_spark_nor_the_file_system(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("touched Spark or the file system while constructing")

    from pyspark.sql import SparkSession

    monkeypatch.setattr(SparkSession.Builder, "getOrCreate", forbidden)
    monkeypatch.setattr(SparkSession, "getActiveSession", forbidden)
    monkeypatch.setattr("fsspec.core.url_to_fs", forbidden)
    monkeypatch.setattr("fsspec.filesystem", forbidden)

    config = {
        "volume_ratings": {
            "type": TYPE,
            "filepath": "/Volumes/main/recsys/raw/ml-25m/ratings.csv",
            "format": "ml_csv",
        },
        "uc_ratings": {
            "type": TYPE,
            "table": "main.recsys.item_ratings",
            "columns": {"user_id": "userId", "item_id": "movieId", "timestamp": "tstamp"},
        },
    }
    catalog = DataCatalog.from_config(config)
    for name, entry in config.items():
        dataset = AbstractDataset.from_config(name, entry)
        assert isinstance(dataset, RatingsDataset)
        assert str(dataset)
        assert name in catalog


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of"),
        ({"filepath": "a.csv", "table": "t"}, "exactly one of"),
        ({"filepath": "a.csv", "format": "csv"}, "unknown `format: csv`"),
        ({"filepath": "a.csv", "rating_range": [5, 1]}, "low <= high"),
        ({"filepath": "a.csv", "rating_range": "high"}, "rating_range"),
        ({"table": "t", "columns": {"user": "u"}}, "unknown key"),
        ({"filepath": "a.csv", "columns": {"user_id": "u"}}, "`table:` only"),
    ],
)
def test_invalid_configuration_is_rejected(kwargs, message):
    with pytest.raises(DatasetError, match=message):
        RatingsDataset(**kwargs)
