"""The shared side-features stage's nodes, and the two-tower's side tables built from them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_kedro.pipelines.two_tower.nodes import side_tables, two_tower_spec
from recsys_kedro.training.specs import spec_from_dict


def test_a_side_table_without_features_may_be_absent(spark):
    from recsys_kedro.pipelines.shared.side_features.nodes import (
        build_item_profiles,
        build_user_profiles,
    )

    index = spark.createDataFrame([("u1", 0), ("u2", 1)], "user_id string, user_idx long")
    schema = {"users": {"features": {}}, "items": {"features": {}}}
    profiles, report = build_user_profiles(None, index, schema)
    assert profiles.columns == ["user_idx"] and profiles.count() == 2
    assert report["coverage"]["without_side_row"] == 2 and report["cardinalities"] == {}
    declared = {"items": {"features": {"brand": {"kind": "categorical"}}}}
    items = index.toDF("item_id", "item_idx")
    with pytest.raises(ValueError, match=r"absent but features \['brand'\].*raw_items"):
        build_item_profiles(None, items, declared)
    with pytest.raises(ValueError, match="feature_schema: .*parameters_features.yml"):
        build_item_profiles(None, items, {"items": {"features": {"brand": {"kind": "bag"}}}})


SCHEMA = {
    "users": {"features": [{"name": "segment", "kind": "categorical"}]},
    "items": {
        "features": [
            {"name": "tags", "kind": "multi_hot", "separator": "|"},
            {"name": "price", "kind": "numeric", "transform": "log"},
        ]
    },
}


def test_side_tables_give_the_towers_every_feature_of_the_schema():
    users = pd.DataFrame({"user_idx": [1, 0], "segment": [2, 0]})  # any row order
    items = pd.DataFrame(
        {
            "item_idx": [0, 1, 2],
            "tags": [[1, 3], [0], [2]],
            "price": [0.5, 1.5, 0.2],
            "price_missing": [0.0, 0.0, 1.0],
        }
    )
    reports = (
        {"cardinalities": {"segment": 3}, "coverage": {"ids": 2}},
        {"cardinalities": {"tags": 4}, "coverage": {"ids": 3}},
    )
    popularity = pd.DataFrame({"item_idx": [0, 1, 2], "n_rated": [5, 0, 2], "n_positive": 1})
    side = side_tables(users, items, *reports, popularity, SCHEMA)
    assert side["user_side"] == [["segment", 3, 1]] and side["item_side"] == [["tags", 4, 2]]
    assert side["item_dense"] == 2 and side["user_dense"] == 0
    assert side["tables"]["user"]["segment"] == [[0], [2]]  # by user_idx
    assert side["tables"]["item"]["tags"] == [[1, 3], [0, -1], [2, -1]]
    assert side["tables"]["item_known"] == [1.0, 0.0, 1.0]  # item 1: no train row
    np.testing.assert_allclose(side["tables"]["item_dense"], [[0.5, 0], [1.5, 0], [0.2, 1]])
    model = {"embedding_dim": 4, "layer_sizes": [4], "side_features": True}
    training = {"loss": "softmax", "temperature": 0.1, "log_q": "none"}
    stats = {"n_users": 2, "n_items": 3}
    spec = spec_from_dict(two_tower_spec(stats, popularity, side, model, training))
    assert spec.model.item_side == (("tags", 4, 2),) and spec.model.item_dense == 2
    assert spec.side_tables == side["tables"]
    ids_only = spec_from_dict(two_tower_spec(stats, popularity, side, {**model,
                              "side_features": False}, training))  # fmt: skip
    assert not ids_only.model.has_side and ids_only.side_tables is None
    with pytest.raises(ValueError, match="re-run the features"):
        side_tables(users.iloc[:1], items, *reports, popularity, SCHEMA)


def test_a_weighted_label_rule_makes_the_spec_read_row_weights():
    popularity = pd.DataFrame({"item_idx": [0, 1], "n_rated": [1, 1], "n_positive": 1})
    model = {"embedding_dim": 4, "layer_sizes": [4]}
    training = {"loss": "softmax", "temperature": 0.1, "log_q": "none"}
    stats = {"n_users": 2, "n_items": 2}
    events = {"purchase": {"label": 1, "weight": 3}, "view": 1}
    label = {"label": {"rule": "events", "events": events}}
    spec = spec_from_dict(two_tower_spec(stats, popularity, None, model, training, label))
    assert spec.weighted and spec.layout.weight == "weight"
    unlabelled = two_tower_spec(stats, popularity, None, model, training, None)
    assert spec_from_dict(unlabelled).layout.weight is None
    plain = {"label": {"rule": "events", "events": {"purchase": 1, "view": 1}}}
    assert not spec_from_dict(two_tower_spec(stats, popularity, None, model, training,
                              plain)).weighted  # fmt: skip
