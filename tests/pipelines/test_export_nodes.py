from __future__ import annotations

import pytest

from recsys_kedro.pipelines.export.nodes import to_mds_frame

COLUMNS = {"user_idx": "int64", "item_idx": "int64", "label": "int32", "rating": "float32"}


def _frame(spark):
    return spark.createDataFrame(
        [(1, 2, 4.5, 99, 1), (3, 4, 1.0, 98, 0)],
        "user_idx int, item_idx int, rating double, timestamp long, label long",
    )


def test_to_mds_frame_selects_casts_and_repartitions(spark):
    out = to_mds_frame(_frame(spark), {"num_partitions": 3, "columns": COLUMNS})
    assert out.columns == list(COLUMNS)
    assert dict(out.dtypes) == {
        "user_idx": "bigint",
        "item_idx": "bigint",
        "label": "int",
        "rating": "float",
    }
    assert out.rdd.getNumPartitions() == 3
    assert sorted(tuple(r) for r in out.collect()) == [(1, 2, 1, 4.5), (3, 4, 0, 1.0)]


def test_to_mds_frame_without_columns_keeps_every_column_as_typed(spark):
    df = spark.createDataFrame([(1, [3, 4], 0.5)], "a long, ids array<long>, x float")
    out = to_mds_frame(df, {"num_partitions": 2, "columns": None})
    assert out.dtypes == df.dtypes and out.rdd.getNumPartitions() == 2


def test_to_mds_frame_names_an_unknown_column_or_dtype(spark):
    with pytest.raises(ValueError, match=r"\['genre'\]"):
        to_mds_frame(_frame(spark), {"num_partitions": 1, "columns": {"genre": "int64"}})
    with pytest.raises(ValueError, match="string"):
        to_mds_frame(_frame(spark), {"num_partitions": 1, "columns": {"label": "string"}})
