from __future__ import annotations

import pytest

from recsys_kedro.data.interactions import (
    LabelRule,
    LabelRuleError,
    build_id_index,
    deduplicate_interactions,
    index_interactions,
    index_items,
    index_users,
    item_popularity,
    label_interactions,
    split_interactions,
    summarise_splits,
)

RATINGS = "user_id string, item_id string, rating double, timestamp long"
RAW = "user_id string, item_id string, rating double, event string, timestamp long"
INTERACTIONS = "user_idx long, item_idx long, rating float, timestamp long, label int"
THRESHOLD = LabelRule(rule="rating_threshold", threshold=4.0)


def _ratings(spark, rows):
    return spark.createDataFrame(rows, RATINGS)


def _raw(spark, rows):
    """Raw ratings as InteractionsDataset loads them (no event type)."""
    return spark.createDataFrame([(u, i, r, None, t) for u, i, r, t in rows], RAW)


def _clean(raw, rule=THRESHOLD, params=None):
    return deduplicate_interactions(label_interactions(raw, rule), params or {})


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


def test_threshold_labels_then_indexes(spark):
    df = _clean(_raw(spark, [("a", "x", 4.0, 1), ("b", "y", 3.5, 2)]))
    users, items = index_users(df), index_items(df)
    assert users.columns == ["user_id", "user_idx"] and items.columns == ["item_id", "item_idx"]
    rows = {
        (r.user_idx, r.item_idx): r.label for r in index_interactions(df, users, items).collect()
    }
    assert rows == {(0, 0): 1, (1, 1): 0}


def test_index_interactions_rejects_ids_without_an_index(spark):
    df = _clean(_raw(spark, [("a", "x", 4.0, 1), ("zz", "x", 4.0, 2)]))
    users = build_id_index(df.where("user_id = 'a'"), "user_id", "user_idx")
    items = build_id_index(df, "item_id", "item_idx")
    with pytest.raises(ValueError, match="ids without an index.*zz"):
        index_interactions(df, users, items)


def test_implicit_interactions_are_all_positive(spark):
    raw = _raw(spark, [("a", "x", None, 1), ("a", "x", None, 5), ("b", "y", None, 2)])
    out = _clean(raw, LabelRule(rule="all_positive"))
    assert sorted((r.user_id, r.item_id, r.label, r.timestamp) for r in out.collect()) == [
        ("a", "x", 1, 5),
        ("b", "y", 1, 2),
    ]


def test_the_threshold_rule_refuses_rows_without_a_rating(spark):
    raw = _raw(spark, [("a", "x", 4.0, 1), ("b", "y", None, 2)])
    with pytest.raises(LabelRuleError, match="1 of 2 interactions have no rating.*all_positive"):
        label_interactions(raw, THRESHOLD)


def test_events_label_drop_and_keep_a_pairs_strongest_event(spark, caplog):
    rule = LabelRule.from_params(
        {"rule": "events", "events": {"purchase": 1, "cart": 1, "skip": 0, "view": "drop"}}
    )
    rows = [
        ("a", "x", None, "view", 1),
        ("a", "x", None, "purchase", 2),
        ("a", "x", None, "view", 9),  # a later view does not undo the purchase
        ("a", "y", None, "skip", 3),
        ("a", "y", None, "skip", 4),
        ("b", "x", None, "view", 5),  # only views: the pair is dropped
        ("b", "y", None, "skip", 6),
        ("b", "y", None, "cart", 7),
    ]
    with caplog.at_level("INFO", logger="recsys_kedro.data.interactions"):
        out = _clean(spark.createDataFrame(rows, RAW), rule)
    assert "label rule: 3 of 8 interactions dropped (event types ['view'])" in caplog.text
    assert sorted((r.user_id, r.item_id, r.event, r.label, r.timestamp) for r in out.collect()) == [
        ("a", "x", "purchase", 1, 2),
        ("a", "y", "skip", 0, 4),
        ("b", "y", "cart", 1, 7),
    ]


def test_event_weights_travel_with_the_kept_row(spark):
    rule = LabelRule.from_params(
        {
            "rule": "events",
            "events": {
                "purchase": {"label": 1, "weight": 3.0},
                "view": {"label": 1, "weight": 0.25},
                "skip": 0,
            },
        }
    )
    assert rule.weighted and not LabelRule.from_params({"rule": "all_positive"}).weighted
    rows = [
        ("a", "x", None, "view", 1),
        ("a", "x", None, "purchase", 2),  # same label as the view: the heavier event wins
        ("a", "x", None, "view", 9),
        ("a", "y", None, "view", 3),
        ("b", "y", None, "skip", 6),
    ]
    out = _clean(spark.createDataFrame(rows, RAW), rule)
    got = sorted((r.user_id, r.item_id, r.event, r.label, r.weight) for r in out.collect())
    assert got == [
        ("a", "x", "purchase", 1, 3.0),
        ("a", "y", "view", 1, 0.25),
        ("b", "y", "skip", 0, 1.0),  # a type without a weight weighs 1
    ]
    users, items = (
        build_id_index(out, "user_id", "user_idx"),
        build_id_index(out, "item_id", "item_idx"),
    )
    indexed = index_interactions(out, users, items)
    assert sorted(r.weight for r in indexed.collect()) == [0.25, 1.0, 3.0]
    # Without weights there is no weight column: the exported rows stay as they were.
    plain = LabelRule.from_params({"rule": "events", "events": {"view": 1, "purchase": 1}})
    assert "weight" not in _clean(spark.createDataFrame(rows[:3], RAW), plain).columns


def test_an_event_type_the_rule_does_not_name_is_an_error(spark):
    rule = LabelRule.from_params({"rule": "events", "events": {"purchase": 1}})
    raw = spark.createDataFrame(
        [
            ("a", "x", None, "purchase", 1),
            ("a", "y", None, "wishlist", 2),
            ("b", "y", None, None, 3),
        ],
        RAW,
    )
    with pytest.raises(LabelRuleError, match=r"2 of 3 .*\['<none>', 'wishlist'\]"):
        label_interactions(raw, rule)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"rule": "stars"}, "must be one of"),
        ({"rule": "events"}, "needs `events:`"),
        ({"rule": "events", "events": {"view": 2}}, "1, 0 or drop"),
        ({"rule": "rating_threshold", "threshold": "high"}, "must be a number"),
        ({"rule": "all_positive", "treshold": 4}, "unknown key"),
        ({"rule": "events", "events": {"view": {"weight": 0.2}}}, "takes `label`"),
        ({"rule": "events", "events": {"view": {"label": 1, "wieght": 2}}}, "takes `label`"),
        ({"rule": "events", "events": {"view": {"label": 1, "weight": "x"}}}, "a number"),
        ({"rule": "events", "events": {"view": {"label": 1, "weight": 0}}}, r"in \(0, 1e6\)"),
    ],
)
def test_a_malformed_label_rule_is_refused(params, match):
    with pytest.raises(LabelRuleError, match=match):
        LabelRule.from_params(params)


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
    df = _raw(
        spark,
        [("u1", "i1", 2.0, 10), ("u1", "i1", 5.0, 20), ("u1", "i2", 3.0, 5), ("u2", "i1", 4.0, 7)],
    )
    out = {(r.user_id, r.item_id): r.rating for r in _clean(df).collect()}
    assert out == {("u1", "i1"): 5.0, ("u1", "i2"): 3.0, ("u2", "i1"): 4.0}


def test_deduplicate_without_timestamps_keeps_the_highest_rating(spark):
    df = _raw(spark, [("u1", "i1", 2.0, None), ("u1", "i1", 4.5, None)])
    assert [r.rating for r in _clean(df).collect()] == [4.5]


def test_users_below_the_minimum_are_dropped(spark):
    df = _raw(spark, [("u1", "i1", 2.0, 1), ("u1", "i2", 2.0, 2), ("u2", "i1", 4.0, 3)])
    out = _clean(df, params={"min_user_interactions": 2})
    assert {r.user_id for r in out.collect()} == {"u1"}
    assert out.columns == ["user_id", "item_id", "rating", "event", "timestamp", "label"]
