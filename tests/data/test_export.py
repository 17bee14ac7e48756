from __future__ import annotations

import pytest

from recsys_kedro.data.export import to_mds_frame

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


def _same_user_neighbours(out) -> float:
    """Share of consecutive rows (inside a partition, in write order) of the same user."""
    parts = out.rdd.glom().map(lambda rows: [r["user_idx"] for r in rows]).collect()
    pairs = [(a, b) for users in parts for a, b in zip(users, users[1:], strict=False)]
    return sum(a == b for a, b in pairs) / len(pairs)


def test_exported_rows_are_not_grouped_by_user(spark):
    # A training batch is a slice of one block of consecutive exported rows, so rows
    # written grouped by user (as the split leaves them) would fill a batch with one user's
    # positives as each other's negatives. Spark's round-robin repartition sorts the rows
    # by their hash first (spark.sql.execution.sortBeforeRepartition), which leaves them in
    # a uniform order: this pins it, so a change of that behaviour cannot go unnoticed.
    rows = [(u, i, 1.0, 0, 1) for u in range(25) for i in range(40)]
    grouped = spark.createDataFrame(
        rows, "user_idx int, item_idx int, rating double, timestamp long, label long"
    ).coalesce(1)
    assert _same_user_neighbours(grouped) > 0.9
    out = to_mds_frame(grouped, {"num_partitions": 2, "columns": COLUMNS})
    # 25 equally sized users: a uniform order has about 1/25 same-user neighbours.
    assert _same_user_neighbours(out) < 0.15


def test_a_missing_float_is_exported_as_nan(spark):
    implicit = spark.createDataFrame(
        [(1, 2, None, 99, 1), (3, 4, 2.5, 98, 1)],
        "user_idx int, item_idx int, rating double, timestamp long, label long",
    )
    out = to_mds_frame(implicit, {"num_partitions": 1, "columns": COLUMNS})
    ratings = {r.user_idx: r.rating for r in out.collect()}
    assert ratings[3] == 2.5 and ratings[1] != ratings[1]  # NaN, not null


def test_a_weighted_splits_row_weights_always_travel(spark):
    frame = _frame(spark)
    weighted = frame.withColumn("weight", frame["rating"] / 2)
    out = to_mds_frame(weighted, {"num_partitions": 1, "columns": COLUMNS})
    assert out.columns == [*COLUMNS, "weight"] and dict(out.dtypes)["weight"] == "float"
    assert sorted(r.weight for r in out.collect()) == [0.5, 2.25]
    plain = to_mds_frame(_frame(spark), {"num_partitions": 1, "columns": COLUMNS})
    assert plain.columns == list(COLUMNS)  # no weight column: nothing added
