from __future__ import annotations

from recsys_kedro.pipelines.ingestion.nodes import deduplicate_ratings

SCHEMA = "user_id string, item_id string, rating double, timestamp long"


def test_deduplicate_keeps_the_latest_rating_per_pair(spark):
    df = spark.createDataFrame(
        [("u1", "i1", 2.0, 10), ("u1", "i1", 5.0, 20), ("u1", "i2", 3.0, 5), ("u2", "i1", 4.0, 7)],
        SCHEMA,
    )
    out = {(r.user_id, r.item_id): r.rating for r in deduplicate_ratings(df, {}).collect()}
    assert out == {("u1", "i1"): 5.0, ("u1", "i2"): 3.0, ("u2", "i1"): 4.0}


def test_deduplicate_without_timestamps_keeps_the_highest_rating(spark):
    df = spark.createDataFrame([("u1", "i1", 2.0, None), ("u1", "i1", 4.5, None)], SCHEMA)
    assert [r.rating for r in deduplicate_ratings(df, {}).collect()] == [4.5]


def test_users_below_the_minimum_are_dropped(spark):
    df = spark.createDataFrame(
        [("u1", "i1", 2.0, 1), ("u1", "i2", 2.0, 2), ("u2", "i1", 4.0, 3)], SCHEMA
    )
    out = deduplicate_ratings(df, {"min_user_interactions": 2})
    assert {r.user_id for r in out.collect()} == {"u1"}
    assert out.columns == ["user_id", "item_id", "rating", "timestamp"]
