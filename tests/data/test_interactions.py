from __future__ import annotations

import pytest

from recsys_kedro.data.interactions import (
    build_id_index,
    deduplicate_ratings,
    index_and_label,
    index_items,
    index_users,
    item_popularity,
    split_interactions,
    summarise_splits,
)

RATINGS = "user_id string, item_id string, rating double, timestamp long"
INTERACTIONS = "user_idx long, item_idx long, rating float, timestamp long, label int"


def _ratings(spark, rows):
    return spark.createDataFrame(rows, RATINGS)


def test_id_index_is_contiguous_sorted_and_stable(spark):
    df = _ratings(
        spark, [("b", "x", 1.0, 1), ("a", "y", 2.0, 2), ("c", "x", 3.0, 3), ("a", "x", 1.0, 4)]
    )
    first = sorted(tuple(r) for r in build_id_index(df, "user_id", "user_idx").collect())
    assert first == [("a", 0), ("b", 1), ("c", 2)]
    again = sorted(
        tuple(r) for r in build_id_index(df.repartition(3), "user_id", "user_idx").collect()
    )
    assert again == first


def test_index_and_label_applies_threshold_and_indexes(spark):
    df = _ratings(spark, [("a", "x", 4.0, 1), ("b", "y", 3.5, 2)])
    users, items = index_users(df), index_items(df)
    assert users.columns == ["user_id", "user_idx"] and items.columns == ["item_id", "item_idx"]
    rows = {
        (r.user_idx, r.item_idx): r.label
        for r in index_and_label(df, users, items, {"label_threshold": 4.0}).collect()
    }
    assert rows == {(0, 0): 1, (1, 1): 0}


def test_index_and_label_rejects_ids_without_an_index(spark):
    df = _ratings(spark, [("a", "x", 4.0, 1), ("zz", "x", 4.0, 2)])
    users = build_id_index(df.where("user_id = 'a'"), "user_id", "user_idx")
    items = build_id_index(df, "item_id", "item_idx")
    with pytest.raises(ValueError, match="ids without an index.*zz"):
        index_and_label(df, users, items, {"label_threshold": 4.0})


def _interactions(spark, per_user):
    rows = [
        (u, i, 4.0, 100 * u + t, int(i % 2 == 0))
        for u, n in enumerate(per_user)
        for t, i in enumerate(range(n))
    ]
    return spark.createDataFrame(rows, INTERACTIONS)


def test_temporal_split_puts_each_users_latest_interactions_in_test(spark):
    df = _interactions(spark, [10, 10, 3])
    params = {
        "strategy": "temporal",
        "test_size": 2,
        "validation_size": 1,
        "min_train_interactions": 2,
    }
    train, val, test = split_interactions(df, params)
    test_rows = {(r.user_idx, r.item_idx) for r in test.collect()}
    assert test_rows == {(0, 9), (0, 8), (1, 9), (1, 8)}  # latest two of users 0 and 1
    assert {(r.user_idx, r.item_idx) for r in val.collect()} == {(0, 7), (1, 7)}
    assert train.count() == 7 + 7 + 3  # user 2 is too short to split: all in train
    assert train.count() + val.count() + test.count() == df.count()


def test_temporal_split_with_fractions(spark):
    df = _interactions(spark, [20])
    train, val, test = split_interactions(
        df, {"strategy": "temporal", "test_size": 0.1, "validation_size": 0.2}
    )
    assert (train.count(), val.count(), test.count()) == (14, 4, 2)


def test_temporal_split_needs_timestamps(spark):
    df = spark.createDataFrame([(0, 1, 4.0, None, 1)], INTERACTIONS)
    with pytest.raises(ValueError, match="strategy: random"):
        split_interactions(df, {"strategy": "temporal", "test_size": 1, "validation_size": 1})


def test_random_split_is_seeded_and_complete(spark):
    df = _interactions(spark, [50, 50])
    params = {"strategy": "random", "random_fractions": [0.6, 0.2, 0.2], "seed": 3}
    a = [s.count() for s in split_interactions(df, params)]
    b = [s.count() for s in split_interactions(df, params)]
    assert a == b and sum(a) == 100 and all(n > 0 for n in a)


def test_unknown_split_strategy(spark):
    with pytest.raises(ValueError, match="'temporal' or 'random'"):
        split_interactions(_interactions(spark, [3]), {"strategy": "by_moon"})


def test_item_popularity_counts_positives_and_keeps_every_item(spark):
    train = spark.createDataFrame(
        [(0, 0, 5.0, 1, 1), (1, 0, 5.0, 1, 1), (0, 1, 1.0, 1, 0), (1, 1, 5.0, 2, 1)], INTERACTIONS
    )
    items = spark.createDataFrame([("x", 0), ("y", 1), ("z", 2)], "item_id string, item_idx long")
    # (item_idx, n_positive, n_rated): item 1 was rated twice, liked once
    assert [tuple(r) for r in item_popularity(train, items).collect()] == [
        (0, 2, 2),
        (1, 1, 2),
        (2, 0, 0),
    ]


def test_summary_counts_each_split_and_rejects_an_empty_one(spark):
    df = _interactions(spark, [10, 10])
    train, val, test = split_interactions(
        df, {"strategy": "temporal", "test_size": 2, "validation_size": 1}
    )
    users = spark.createDataFrame([("a", 0), ("b", 1)], "user_id string, user_idx long")
    items = spark.createDataFrame([(str(i), i) for i in range(10)], "item_id string, item_idx long")
    stats = summarise_splits(train, val, test, users, items)
    assert stats["n_users"] == 2 and stats["n_items"] == 10
    assert stats["test"] == {"interactions": 4, "users": 2, "items": 2, "positive_rate": 0.5}
    assert stats["train"]["interactions"] == 14
    with pytest.raises(ValueError, match="validation split is empty"):
        summarise_splits(train, val.limit(0), test, users, items)


def test_deduplicate_keeps_the_latest_rating_per_pair(spark):
    df = spark.createDataFrame(
        [("u1", "i1", 2.0, 10), ("u1", "i1", 5.0, 20), ("u1", "i2", 3.0, 5), ("u2", "i1", 4.0, 7)],
        RATINGS,
    )
    out = {(r.user_id, r.item_id): r.rating for r in deduplicate_ratings(df, {}).collect()}
    assert out == {("u1", "i1"): 5.0, ("u1", "i2"): 3.0, ("u2", "i1"): 4.0}


def test_deduplicate_without_timestamps_keeps_the_highest_rating(spark):
    df = spark.createDataFrame([("u1", "i1", 2.0, None), ("u1", "i1", 4.5, None)], RATINGS)
    assert [r.rating for r in deduplicate_ratings(df, {}).collect()] == [4.5]


def test_users_below_the_minimum_are_dropped(spark):
    df = spark.createDataFrame(
        [("u1", "i1", 2.0, 1), ("u1", "i2", 2.0, 2), ("u2", "i1", 4.0, 3)], RATINGS
    )
    out = deduplicate_ratings(df, {"min_user_interactions": 2})
    assert {r.user_id for r in out.collect()} == {"u1"}
    assert out.columns == ["user_id", "item_id", "rating", "timestamp"]
