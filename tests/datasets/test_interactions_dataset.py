"""InteractionsDataset: a read-only Kedro dataset over recsys_kedro.data.ratings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kedro.io import DataCatalog
from kedro.io.core import AbstractDataset, DatasetError

from recsys_kedro.data.ratings import RatingsFormatError
from recsys_kedro.datasets.interactions_dataset import InteractionsDataset

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ratings"
CANONICAL = "struct<user_id:string,item_id:string,rating:double,event:string,timestamp:bigint>"
TYPE = "recsys_kedro.datasets.interactions_dataset.InteractionsDataset"


def test_load_reads_the_default_recbole_format(spark):
    dataset = InteractionsDataset(filepath=str(FIXTURES / "ml-100k.inter"))

    df = dataset.load()

    assert df.schema.simpleString() == CANONICAL
    rows = df.filter("user_id = '196'").drop("event").collect()
    assert sorted(tuple(r) for r in rows) == [
        ("196", "242", 3.0, 881250949),
        ("196", "393", 4.0, 881251863),
    ]


def test_load_from_catalog_config_with_format_and_rating_range(spark):
    catalog = DataCatalog.from_config(
        {
            "raw_interactions": {
                "type": TYPE,
                "filepath": str(FIXTURES / "ratings.csv"),
                "format": "ml_csv",
                "rating_range": [0.5, 5.0],
            }
        }
    )

    df = catalog.load("raw_interactions")

    assert df.count() == 20
    assert df.filter("rating = 0.5").count() == 3


def test_describe_names_the_source():
    file_ds = InteractionsDataset(filepath="data/01_raw/u.data", format="ml100k_udata")
    table_ds = InteractionsDataset(table="main.recsys.item_ratings", columns={"user_id": "userId"})

    assert file_ds._describe() == {
        "filepath": "data/01_raw/u.data",
        "format": "ml100k_udata",
        "rating_range": [0.5, 5.0],
    }
    assert table_ds._describe() == {
        "table": "main.recsys.item_ratings",
        "columns": {"user_id": "userId"},
        "timestamp_unit": "auto",
        "rating_range": [0.5, 5.0],
    }
    csv_ds = InteractionsDataset(
        filepath="events/*.csv", format="csv", sep=";", timestamp_unit="ms"
    )
    assert csv_ds._describe() == {
        "filepath": "events/*.csv",
        "format": "csv",
        "columns": None,
        "timestamp_unit": "ms",
        "sep": ";",
        "rating_range": [0.5, 5.0],
    }
    assert "u.data" in str(file_ds)
    assert "main.recsys.item_ratings" in str(table_ds)


def test_exists_for_files_and_globs(tmp_path):
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n")

    assert InteractionsDataset(filepath=str(tmp_path / "u.data")).exists()
    assert InteractionsDataset(filepath=str(tmp_path / "*.data")).exists()
    assert InteractionsDataset(filepath=str(tmp_path)).exists()
    assert not InteractionsDataset(filepath=str(tmp_path / "missing.data")).exists()
    assert not InteractionsDataset(filepath=str(tmp_path / "*.csv")).exists()


def test_save_is_refused():
    dataset = InteractionsDataset(filepath="data/01_raw/u.data", format="ml100k_udata")
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save(object())


def test_a_malformed_file_fails_load_with_the_ratings_error(spark, tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("1::1193::5::978300760\n1::661::five::978302109\n")

    with pytest.raises(DatasetError) as info:
        InteractionsDataset(filepath=str(path), format="ml1m_dat").load()

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
        dataset = InteractionsDataset(
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
        rows = sorted(tuple(r) for r in df.drop("event").collect())
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
        assert InteractionsDataset(table=table).exists()
        with pytest.raises(DatasetError) as info:
            InteractionsDataset(table=table).load()
        assert f"table '{table}'" in str(info.value)
        assert "column `rating` (rating) is outside rating_range [0.5, 5]" in str(info.value)

        df = InteractionsDataset(table=table, rating_range=[0, 10]).load()
        assert sorted(tuple(r) for r in df.drop("event").collect()) == [
            ("u1", "i1", 4.0, 1552494331),
            ("u2", "i1", 9.0, 1552494332),
        ]

        with pytest.raises(DatasetError, match=r"missing column\(s\) `userId` \(user_id\)"):
            InteractionsDataset(table=table, columns={"user_id": "userId"}).load()
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {table}")

    assert not InteractionsDataset(table=table).exists()
    with pytest.raises(DatasetError, match="does not exist"):
        InteractionsDataset(table=table).load()


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
        assert isinstance(dataset, InteractionsDataset)
        assert str(dataset)
        assert name in catalog


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of"),
        ({"filepath": "a.csv", "table": "t"}, "exactly one of"),
        ({"filepath": "a.csv", "format": "tsv"}, "unknown `format: tsv`"),
        ({"filepath": "a.csv", "rating_range": [5, 1]}, "low <= high"),
        ({"filepath": "a.csv", "rating_range": "high"}, "rating_range"),
        ({"table": "t", "columns": {"user": "u"}}, "unknown key"),
        ({"filepath": "a.csv", "columns": {"user_id": "u"}}, "are fixed"),
    ],
)
def test_invalid_configuration_is_rejected(kwargs, message):
    with pytest.raises(DatasetError, match=message):
        InteractionsDataset(**kwargs)


def test_an_event_log_from_the_catalog(spark, tmp_path):
    (tmp_path / "events.csv").write_text(
        "visitor;sku;kind;ts\nv1;s1;view;1709294400000\nv2;s1;buy;1709294401000\n"
    )
    catalog = DataCatalog.from_config(
        {
            "raw_interactions": {
                "type": TYPE,
                "filepath": str(tmp_path / "*.csv"),
                "format": "csv",
                "sep": ";",
                "columns": {
                    "user_id": "visitor",
                    "item_id": "sku",
                    "event": "kind",
                    "timestamp": "ts",
                },
                "timestamp_unit": "ms",
            }
        }
    )

    rows = sorted(tuple(r) for r in catalog.load("raw_interactions").collect())

    assert rows == [("v1", "s1", None, "view", 1709294400), ("v2", "s1", None, "buy", 1709294401)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"filepath": "u.data", "format": "ml100k_udata", "columns": {"user_id": "u"}}, "fixed"),
        ({"filepath": "u.data", "format": "ml100k_udata", "timestamp_unit": "ms"}, "fixed"),
        ({"filepath": "e.csv", "format": "csv", "timestamp_unit": "minutes"}, "timestamp_unit"),
        ({"filepath": "e.csv", "format": "xlsx"}, "unknown `format: xlsx`"),
    ],
)
def test_options_a_source_does_not_take_are_refused(kwargs, match):
    with pytest.raises(DatasetError, match=match):
        InteractionsDataset(**kwargs)
