"""The ingestion node: the label rule from the parameters, errors in conf terms."""

from __future__ import annotations

import pytest

from recsys_kedro.pipelines.two_tower.ingestion.nodes import clean_interactions

RAW = "user_id string, item_id string, rating double, event string, timestamp long"


def test_clean_interactions_labels_by_the_configured_rule(spark):
    raw = spark.createDataFrame(
        [
            ("u1", "i1", None, "view", 1),
            ("u1", "i1", None, "buy", 2),
            ("u2", "i1", None, "view", 3),
        ],
        RAW,
    )
    params = {
        "min_user_interactions": 1,
        "label": {"rule": "events", "events": {"buy": 1, "view": 0}},
    }

    out = sorted(tuple(r) for r in clean_interactions(raw, params).collect())

    assert out == [("u1", "i1", None, "buy", 2, 1), ("u2", "i1", None, "view", 3, 0)]


def test_a_rule_the_data_cannot_take_names_the_parameters(spark):
    raw = spark.createDataFrame([("u1", "i1", None, None, 1)], RAW)

    with pytest.raises(ValueError, match=r"no rating.*two_tower\.ingestion\.label in conf/base"):
        clean_interactions(raw, {"label": {"rule": "rating_threshold", "threshold": 4}})
    with pytest.raises(ValueError, match=r"must be one of.*parameters_two_tower\.yml"):
        clean_interactions(raw, {"label": {"rule": "likes"}})
