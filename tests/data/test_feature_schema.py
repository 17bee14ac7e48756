"""recsys_kedro.data.feature_schema: the declared features and the ranker's layout (no Spark)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recsys_kedro.data.feature_schema import (
    Feature,
    FeatureLayout,
    FeatureSchema,
    SchemaError,
    SideTable,
    feature_layout,
)

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf" / "base" / "parameters_features.yml"
RAW = ROOT / "data" / "01_raw" / "ml-100k"


def schema(users=None, items=None, **statistics):
    params = {"users": {"features": users or {}}, "items": {"features": items or {}}}
    if statistics:
        params["statistics"] = statistics
    return FeatureSchema.from_params(params)


# ---------------------------------------------------------------- from_params


def test_feature_from_params_defaults():
    feature = Feature.from_params("gender", {"kind": "categorical"})
    assert feature == Feature(name="gender", column="gender", kind="categorical")
    assert (feature.lowercase, feature.prefix_chars, feature.max_size) == (True, None, None)
    assert (feature.hash_buckets, feature.separator, feature.ignore) == (None, None, ())
    assert (feature.transform, feature.fill, feature.flag_missing) == ("none", "mean", True)

    # Lists become tuples; numbers become floats; an explicit null means the default.
    age = Feature.from_params(
        "age_bucket",
        {
            "column": "age",
            "kind": "numeric",
            "transform": "bucketize",
            "boundaries": [18, 25],
            "valid_range": [1, None],
            "ignore": None,
        },
    )
    assert age.column == "age"
    assert age.boundaries == (18.0, 25.0)
    assert age.valid_range == (1.0, None)
    assert age.ignore == ()
    genres = Feature.from_params("genres", {"kind": "multi_hot", "ignore": ["unknown", 0]})
    assert genres.ignore == ("unknown", "0")


def test_side_table_and_schema_defaults():
    users = SideTable.from_params("user", None)
    assert (users.id_column, users.id_key, users.key) == ("user_id", "user_id", "user_idx")
    assert (users.features, users.strip_types) == ((), False)
    year = {"year": {"kind": "numeric"}}
    items = SideTable.from_params(
        "item", {"id_column": "movie", "strip_types": True, "features": year}
    )
    assert (items.id_column, items.id_key, items.key) == ("movie", "item_id", "item_idx")
    assert items.strip_types is True

    empty = FeatureSchema.from_params(None)
    assert empty == FeatureSchema()
    assert (empty.users.entity, empty.items.entity) == ("user", "item")
    assert (empty.affinity, empty.user_prior_weight, empty.item_prior_weight) == (None, 0.0, 10.0)
    assert empty.table("user") is empty.users
    assert empty.table("item") is empty.items


def test_feature_year_without_kind_is_refused():
    # `year: null` (no settings) has no kind: the error lists the known keys.
    with pytest.raises(SchemaError, match=r"feature 'year'.*kind.*known keys are \["):
        SideTable.from_params("item", {"features": {"year": None}})


def test_features_as_a_list_keep_their_order():
    listed = SideTable.from_params(
        "item",
        {
            "features": [
                {"name": "year", "kind": "numeric", "transform": "log"},
                {"name": "genres", "column": "class", "kind": "multi_hot", "separator": "|"},
            ]
        },
    )
    mapped = SideTable.from_params(
        "item",
        {
            "features": {
                "year": {"kind": "numeric", "transform": "log"},
                "genres": {"column": "class", "kind": "multi_hot", "separator": "|"},
            }
        },
    )
    assert listed == mapped
    assert [(f.name, f.column) for f in listed.features] == [("year", "year"), ("genres", "class")]
    for entry in ({"kind": "categorical"}, "genres"):
        with pytest.raises(SchemaError, match=r"items.features: every entry needs a `name`"):
            SideTable.from_params("item", {"features": [entry]})
    twice = [{"name": "year", "kind": "numeric"}, {"name": "year", "kind": "categorical"}]
    with pytest.raises(SchemaError, match=r"\['year'\] repeat"):
        FeatureSchema.from_params({"items": {"features": twice}})


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"kind": "ordinal"}, r"kind must be one of .*'ordinal'"),
        ({"kind": "numeric", "transform": "sqrt"}, r"transform must be one of .*'sqrt'"),
        ({"kind": "categorical", "colour": "red"}, r"colour.*known keys are \[.*'column'"),
        ({"kind": "numeric", "transform": "bucketize"}, r"bucketize needs `boundaries`"),
        (
            {"kind": "numeric", "transform": "bucketize", "boundaries": [10, 5]},
            r"strictly increasing.*\[10, 5\]",
        ),
        (
            {"kind": "numeric", "transform": "bucketize", "boundaries": [1, 1]},
            r"strictly increasing",
        ),
        ({"kind": "numeric", "boundaries": ["a"]}, r"boundaries must be a list of numbers"),
        (
            {"kind": "categorical", "max_size": 10, "hash_buckets": 8},
            r"max_size or hash_buckets, not both",
        ),
        ({"kind": "categorical", "prefix_chars": 0}, r"prefix_chars must be a positive integer"),
        ({"kind": "categorical", "max_size": True}, r"max_size must be a positive integer"),
        ({"kind": "categorical", "hash_buckets": 2.5}, r"hash_buckets must be a positive"),
        ({"kind": "categorical", "transform": "log"}, r"apply to numeric features only"),
        ({"kind": "multi_hot", "boundaries": [1]}, r"apply to numeric features only"),
        ({"kind": "multi_hot", "separator": ""}, r"separator must be non-empty"),
        ({"kind": "numeric", "fill": "median"}, r"fill must be `mean` or a number"),
        ({"kind": "numeric", "valid_range": [5, 1]}, r"valid_range \[5.0, 1.0\] is empty"),
        ({"kind": "numeric", "valid_range": [1]}, r"valid_range must be \[low, high\]"),
        ({"kind": "numeric", "column": ""}, r"name and column must be non-empty"),
        ("categorical", r"settings as a mapping"),
    ],
)
def test_feature_validation_errors(params, message):
    with pytest.raises(SchemaError, match=message) as caught:
        Feature.from_params("f", params)
    assert "feature 'f'" in str(caught.value)


def test_schema_validation_errors():
    with pytest.raises(SchemaError, match=r"unknown key\(s\) \['features_'\]"):
        SideTable.from_params("user", {"features_": {}})
    with pytest.raises(SchemaError, match="entity must be one of"):
        SideTable("movie")
    with pytest.raises(SchemaError, match=r"unknown key\(s\) \['user'\]"):
        FeatureSchema.from_params({"user": {}})
    with pytest.raises(SchemaError, match=r"unknown key\(s\) \['statistics.prior'\]"):
        FeatureSchema.from_params({"statistics": {"prior": 1}})
    with pytest.raises(SchemaError, match="users must be the user table"):
        FeatureSchema(users=SideTable("item"))
    with pytest.raises(SchemaError, match="prior_weight.*>= 0"):
        schema(item_prior_weight=-1)


@pytest.mark.parametrize(
    ("users", "items", "clash"),
    [
        # The same name on both tables.
        ({"genre": {"kind": "categorical"}}, {"genre": {"kind": "categorical"}}, "genre"),
        # A dense feature's missing flag repeats another feature's name.
        (
            {"age": {"kind": "numeric"}, "age_missing": {"kind": "categorical"}},
            {},
            "age_missing",
        ),
        # Reserved: keys, the label, the rating and the statistics.
        ({"rating": {"kind": "numeric"}}, {}, "rating"),
        ({"user_idx": {"kind": "categorical"}}, {}, "user_idx"),
        ({}, {"item_mean_rating": {"kind": "numeric"}}, "item_mean_rating"),
        ({"label": {"kind": "categorical"}}, {}, "label"),
        # Reserved: an affinity's share array and its output column.
        (
            {"user_genres_share": {"kind": "numeric"}},
            {"genres": {"kind": "multi_hot"}},
            "user_genres_share",
        ),
        (
            {"genres_affinity": {"kind": "numeric"}},
            {"genres": {"kind": "multi_hot"}},
            "genres_affinity",
        ),
    ],
)
def test_schema_refuses_clashing_and_reserved_names(users, items, clash):
    with pytest.raises(SchemaError, match=rf"feature name\(s\) \['{clash}'\] repeat or clash"):
        schema(users, items)


def test_schema_affinity_must_name_item_multi_hot_features():
    items = {"genres": {"kind": "multi_hot"}, "year": {"kind": "numeric"}}
    users = {"tags": {"kind": "multi_hot"}}
    with pytest.raises(SchemaError, match=r"affinity names \['year'\].*\['genres'\]"):
        schema(users, items, affinity=["genres", "year"])
    with pytest.raises(SchemaError, match=r"affinity names \['tags'\]"):
        schema(users, items, affinity=["tags"])
    # null: every item multi-hot feature (never a user one); []: none.
    assert schema(users, items).affinity_features == ("genres",)
    assert schema(users, items, affinity=[]).affinity_features == ()
    # An affinity's names are free when the affinity is not computed.
    assert schema({"genres_affinity": {"kind": "numeric"}}, items, affinity=[])


# ---------------------------------------------------------------- roles and layout


@pytest.mark.parametrize(
    ("params", "role", "outputs"),
    [
        ({"kind": "categorical"}, "sparse", ("f",)),
        ({"kind": "categorical", "hash_buckets": 8}, "sparse", ("f",)),
        ({"kind": "multi_hot", "separator": "|"}, "jagged", ("f",)),
        ({"kind": "numeric", "transform": "bucketize", "boundaries": [1]}, "sparse", ("f",)),
        ({"kind": "numeric"}, "dense", ("f", "f_missing")),
        ({"kind": "numeric", "transform": "log"}, "dense", ("f", "f_missing")),
        ({"kind": "numeric", "transform": "standardize"}, "dense", ("f", "f_missing")),
        ({"kind": "numeric", "fill": 0, "flag_missing": False}, "dense", ("f",)),
    ],
)
def test_feature_role_and_outputs(params, role, outputs):
    feature = Feature.from_params("f", params)
    assert (feature.role, feature.outputs) == (role, outputs)


USERS = {
    "income": {"kind": "numeric", "transform": "log"},
    "age": {"kind": "numeric", "transform": "bucketize", "boundaries": [18]},
    "tags": {"kind": "multi_hot"},
    "height": {"kind": "numeric", "flag_missing": False},
    "gender": {"kind": "categorical"},
}
ITEMS = {
    "genres": {"kind": "multi_hot", "separator": " "},
    "year": {"kind": "numeric", "transform": "standardize"},
    "studio": {"kind": "categorical", "hash_buckets": 16},
    "keywords": {"kind": "multi_hot"},
}
CARDS = {
    "user_idx": 10,
    "item_idx": 20,
    "age": 3,
    "tags": 5,
    "gender": 3,
    "genres": 19,
    "studio": 17,
    "keywords": 7,
}


def test_feature_layout_orders_by_role_and_declaration():
    layout = feature_layout(schema(USERS, ITEMS), CARDS, ratings=True)
    assert layout.user_sparse == ("age", "tags", "gender")
    assert layout.item_sparse == ("genres", "studio", "keywords")
    assert layout.jagged == ("tags", "genres", "keywords")
    assert layout.user_dense == ("income", "income_missing", "height")
    assert layout.item_dense == ("year", "year_missing")
    assert layout.user_statistics == ("user_log_activity", "user_mean_rating")
    assert layout.item_statistics == ("item_log_popularity", "item_mean_rating")
    assert layout.affinities == (
        ("user_genres_share", "genres", "genres_affinity"),
        ("user_keywords_share", "keywords", "keywords_affinity"),
    )
    assert layout.sparse_features == (
        "user_idx",
        "item_idx",
        "age",
        "tags",
        "gender",
        "genres",
        "studio",
        "keywords",
    )
    assert layout.dense_features == (
        "income",
        "income_missing",
        "height",
        "year",
        "year_missing",
        "user_log_activity",
        "user_mean_rating",
        "item_log_popularity",
        "item_mean_rating",
        "genres_affinity",
        "keywords_affinity",
    )
    assert layout.user_columns == (
        "age",
        "tags",
        "gender",
        "income",
        "income_missing",
        "height",
        "user_log_activity",
        "user_mean_rating",
        "user_genres_share",
        "user_keywords_share",
    )
    assert layout.item_columns == (
        "genres",
        "studio",
        "keywords",
        "year",
        "year_missing",
        "item_log_popularity",
        "item_mean_rating",
    )
    assert layout.cardinalities == CARDS


def test_feature_layout_without_ratings_and_chosen_affinity():
    layout = feature_layout(schema(USERS, ITEMS, affinity=["keywords"]), CARDS, ratings=False)
    assert layout.user_statistics == ("user_log_activity",)
    assert layout.item_statistics == ("item_log_popularity",)
    assert layout.affinities == (("user_keywords_share", "keywords", "keywords_affinity"),)
    assert layout.dense_features[-3:] == (
        "user_log_activity",
        "item_log_popularity",
        "keywords_affinity",
    )
    assert "user_mean_rating" not in layout.user_columns
    assert "item_mean_rating" not in layout.item_columns

    bare = feature_layout(FeatureSchema(), {"user_idx": 2, "item_idx": 3}, ratings=False)
    assert bare.sparse_features == ("user_idx", "item_idx")
    assert bare.dense_features == ("user_log_activity", "item_log_popularity")
    assert (bare.jagged, bare.affinities) == ((), ())


def test_feature_layout_needs_every_sparse_cardinality():
    cards = {k: v for k, v in CARDS.items() if k != "keywords"}
    with pytest.raises(SchemaError, match=r"no cardinality for sparse feature\(s\) \['keywords'\]"):
        feature_layout(schema(USERS, ITEMS), cards, ratings=True)
    with pytest.raises(SchemaError, match=r"\['user_idx'\]"):
        FeatureLayout(cardinalities={"item_idx": 3})


def test_feature_layout_round_trips_through_json():
    layout = feature_layout(schema(USERS, ITEMS), CARDS, ratings=True)
    stored = json.loads(json.dumps(layout.to_dict()))
    assert stored["affinities"][0] == ["user_genres_share", "genres", "genres_affinity"]
    assert stored["cardinalities"] == CARDS
    again = FeatureLayout.from_dict(stored)
    assert again == layout
    assert isinstance(again.user_sparse, tuple)
    assert isinstance(again.affinities[0], tuple)
    assert again.dense_features == layout.dense_features
    # A layout with fewer fields (an older summary) still loads, with the defaults.
    assert FeatureLayout.from_dict({"cardinalities": {"user_idx": 1, "item_idx": 1}}) == (
        FeatureLayout(cardinalities={"user_idx": 1, "item_idx": 1})
    )


# ---------------------------------------------------------------- conf/base


def test_conf_base_schema_parses():
    params = yaml.safe_load(CONF.read_text(encoding="utf-8"))
    parsed = FeatureSchema.from_params(params["feature_schema"])
    users, items = parsed.users, parsed.items
    assert [(f.name, f.role) for f in users.features] == [
        ("age_bucket", "sparse"),
        ("gender", "sparse"),
        ("occupation", "sparse"),
        ("zip_prefix", "sparse"),
    ]
    assert [(f.name, f.role) for f in items.features] == [
        ("year_bucket", "sparse"),
        ("genres", "jagged"),
    ]
    # Every declared column is in the ML-100K file's header (as the table will read it).
    for side, path in ((users, RAW / "ml-100k.user"), (items, RAW / "ml-100k.item")):
        header = path.read_text(encoding="utf-8").partition("\n")[0].split("\t")
        if side.strip_types:
            header = [h.rpartition(":")[0] or h for h in header]
        assert {side.id_column, *(f.column for f in side.features)} <= set(header), path.name
    age = users.features[0]
    assert age.boundaries == (18.0, 25.0, 35.0, 45.0, 50.0, 56.0)
    assert age.valid_range == (1.0, None)
    assert users.features[3].prefix_chars == 1
    genres = items.features[1]
    assert (genres.separator, genres.ignore) == (" ", ("unknown",))
    assert parsed.affinity_features == ("genres",)
    assert (parsed.user_prior_weight, parsed.item_prior_weight) == (0.0, 10.0)

    declared = (*users.features, *items.features)
    cards = {"user_idx": 1, "item_idx": 1, **{f.name: 2 for f in declared}}
    layout = feature_layout(parsed, cards, ratings=True)
    assert layout.sparse_features == (
        "user_idx",
        "item_idx",
        "age_bucket",
        "gender",
        "occupation",
        "zip_prefix",
        "year_bucket",
        "genres",
    )
    assert layout.jagged == ("genres",)
    assert layout.affinities == (("user_genres_share", "genres", "genres_affinity"),)
