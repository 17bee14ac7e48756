"""recsys_kedro.data.side_features: schema-driven profiles, train-only statistics, ranker rows."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pytest
import yaml

from recsys_kedro.data.feature_schema import (
    FeatureSchema,
    SchemaError,
    SideTable,
    feature_layout,
)
from recsys_kedro.data.interactions import build_id_index, split_interactions
from recsys_kedro.data.side_features import (
    item_statistics,
    ranker_rows,
    side_profiles,
    strip_atomic_types,
    train_has_ratings,
    user_statistics,
)

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT / "data" / "01_raw" / "ml-100k"
CONF = ROOT / "conf" / "base" / "parameters_features.yml"

TRAIN_SCHEMA = "user_idx long, item_idx long, rating float, timestamp long, label int"


def index(spark, ids, entity):
    """``<entity>_id, <entity>_idx``: the ids numbered in the given order."""
    return spark.createDataFrame(
        [(str(i), n) for n, i in enumerate(ids)], f"{entity}_id string, {entity}_idx long"
    )


def table(entity, features, **settings):
    return SideTable.from_params(entity, {"features": features, **settings})


def by_key(df, key):
    return {row[key]: row.asDict() for row in df.collect()}


def vocab(values):
    """The expected vocabulary: sorted distinct values, numbered from 1."""
    return {v: i for i, v in enumerate(sorted(set(values)), start=1)}


# ---------------------------------------------------------------- strip_atomic_types


def test_strip_atomic_types_renames_typed_columns_only(spark):
    df = spark.createDataFrame(
        [("1", "2", "3", "4")], ["user_id:token", "plain", "class:token_seq", "a:b:float"]
    )
    assert strip_atomic_types(df).columns == ["user_id", "plain", "class", "a:b"]


def test_strip_atomic_types_refuses_clashing_names(spark):
    df = spark.createDataFrame([("1", "2")], ["age:token", "age"])
    with pytest.raises(SchemaError, match=r"duplicate column.*\['age'\]"):
        strip_atomic_types(df)


# ---------------------------------------------------------------- user-like profiles

USERS_SCHEMA = (
    "user_id string, age string, gender string, occupation string, zip_code string, income double"
)
USERS = [
    ("u1", "17", "M", "writer", "02139", 100.0),
    ("u2", "18", "F", "artist", "94043", 0.0),
    ("u3", "56", " m ", "Writer ", "T8H1N", -3.0),
    ("u4", "", "", "", "", None),
    ("u5", "abc", "F", "nurse", None, float("nan")),
    (" u6 ", "200", "f", "writer", "02139", float("inf")),  # age outside valid_range
    ("u9", "30", "F", "doctor", "10001", 50.0),  # in the table, not in the index
]
USER_IDS = ["u1", "u2", "u3", "u4", "u5", "u6", "u7"]  # u7: no row in the table
INCOME = [100.0, 0.0, -3.0, 50.0]  # the table's finite incomes (u9's included)
USER_FEATURES = yaml.safe_load("""
gender: {kind: categorical}
occupation: {kind: categorical}
occ_top: {column: occupation, kind: categorical, max_size: 2}
occ_case: {column: occupation, kind: categorical, lowercase: false}
zip_prefix: {column: zip_code, kind: categorical, prefix_chars: 1}
zip_hash: {column: zip_code, kind: categorical, hash_buckets: 4}
age_bucket: {column: age, kind: numeric, transform: bucketize, boundaries: [18, 25, 35, 45, 50, 56],
             valid_range: [1, 120]}
inc: {column: income, kind: numeric}
inc_log: {column: income, kind: numeric, transform: log}
inc_std: {column: income, kind: numeric, transform: standardize}
inc_fixed: {column: income, kind: numeric, fill: -1, flag_missing: false}
""")


@pytest.fixture(scope="module")
def users_built(spark):
    users = spark.createDataFrame(USERS, USERS_SCHEMA)
    out, report = side_profiles(users, index(spark, USER_IDS, "user"), table("user", USER_FEATURES))
    rows = {USER_IDS[idx]: row for idx, row in by_key(out, "user_idx").items()}
    return out.dtypes, rows, report


def test_profiles_columns_types_and_one_row_per_id(users_built):
    dtypes, rows, _ = users_built
    sparse = ["gender", "occupation", "occ_top", "occ_case", "zip_prefix", "zip_hash", "age_bucket"]
    dense = ["inc", "inc_missing", "inc_log", "inc_log_missing", "inc_std", "inc_std_missing"]
    assert dtypes == [
        ("user_idx", "bigint"),
        *[(c, "int") for c in sparse],
        *[(c, "float") for c in dense],
        ("inc_fixed", "float"),  # no missing flag
    ]
    assert sorted(rows) == USER_IDS  # every id of the index, and only those; " u6 " matched
    assert all(v is not None for row in rows.values() for v in row.values())


def test_categorical_vocabularies_are_sorted_normalised_and_zero_is_unknown(users_built):
    _, rows, _ = users_built
    # Values of the whole table (u9's "doctor" too), trimmed and lower-cased, sorted, from 1.
    gender = vocab(["m", "f"])
    occupation = vocab(["writer", "artist", "nurse", "doctor"])
    expected = {  # user: (gender, occupation); None = unknown
        "u1": ("m", "writer"),
        "u2": ("f", "artist"),
        "u3": ("m", "writer"),  # " m " == "m", "Writer " == "writer"
        "u4": (None, None),  # empty strings
        "u5": ("f", "nurse"),
        "u6": ("f", "writer"),
        "u7": (None, None),  # no side row
    }
    for user, (g, o) in expected.items():
        assert rows[user]["gender"] == gender.get(g, 0), user
        assert rows[user]["occupation"] == occupation.get(o, 0), user
    # Case kept: "Writer" and "writer" differ, and sort before lower case.
    case = vocab(["writer", "artist", "Writer", "nurse", "writer", "doctor"])
    assert [rows[u]["occ_case"] for u in USER_IDS] == [
        case["writer"],
        case["artist"],
        case["Writer"],
        0,
        case["nurse"],
        case["writer"],
        0,
    ]


def test_categorical_prefix_max_size_and_hash_buckets(users_built):
    _, rows, report = users_built
    # prefix_chars=1 of the lower-cased zip: "0", "9", "t", "1" (u9); null and "" unknown.
    prefix = vocab(["0", "9", "t", "1"])
    assert [rows[u]["zip_prefix"] for u in USER_IDS] == [
        prefix["0"],
        prefix["9"],
        prefix["t"],
        0,
        0,
        prefix["0"],
        0,
    ]
    # max_size=2 keeps the most frequent values: writer (3 rows), then the first of the
    # 1-row ties by value (artist < doctor < nurse); then sorted and numbered.
    assert [rows[u]["occ_top"] for u in USER_IDS] == [2, 1, 2, 0, 0, 2, 0]
    # hash_buckets=4: indexes in 1..4, equal values hash alike; missing is 0.
    hashed = [rows[u]["zip_hash"] for u in USER_IDS]
    assert all(1 <= h <= 4 for h in hashed[:3])
    assert hashed[0] == hashed[5]  # the same zip code
    assert hashed[3] == hashed[4] == hashed[6] == 0
    cards = report["cardinalities"]
    assert cards["gender"] == 3
    assert cards["occupation"] == 5
    assert cards["occ_top"] == 3
    assert cards["occ_case"] == 6  # Writer, artist, doctor, nurse, writer
    assert cards["zip_prefix"] == 5
    assert cards["zip_hash"] == 5


def test_numeric_bucketize_and_dense_transforms(users_built):
    _, rows, report = users_built
    # 1 + the number of boundaries <= age; unparsable, empty, outside [1, 120] or absent: 0.
    assert [rows[u]["age_bucket"] for u in USER_IDS] == [1, 2, 7, 0, 0, 0, 0]
    assert report["cardinalities"]["age_bucket"] == 8
    assert not {"inc", "inc_log", "inc_std", "inc_fixed"} & set(report["cardinalities"])

    # Dense: u4 (null), u5 (NaN), u6 (inf) and u7 (no row) are missing, filled and flagged.
    mean, std = statistics.fmean(INCOME), statistics.pstdev(INCOME)
    log_mean = statistics.fmean(math.copysign(math.log1p(abs(v)), v) for v in INCOME)
    present = {"u1": 100.0, "u2": 0.0, "u3": -3.0}
    for user in USER_IDS:
        row = rows[user]
        flag = 0.0 if user in present else 1.0
        assert row["inc_missing"] == row["inc_log_missing"] == row["inc_std_missing"] == flag
        if user in present:
            v = present[user]
            assert row["inc"] == pytest.approx(v)
            assert row["inc_log"] == pytest.approx(math.copysign(math.log1p(abs(v)), v))
            assert row["inc_std"] == pytest.approx((v - mean) / std, rel=1e-5)
            assert row["inc_fixed"] == pytest.approx(v)
        else:
            assert row["inc"] == pytest.approx(mean)
            assert row["inc_log"] == pytest.approx(log_mean, rel=1e-5)
            assert row["inc_std"] == 0.0
            assert row["inc_fixed"] == -1.0
    assert "inc_fixed_missing" not in rows["u1"]


def test_profiles_report_coverage(users_built):
    _, _, report = users_built
    assert report["coverage"] == {
        "ids": 7,
        "with_side_row": 6,
        "without_side_row": 1,  # u7
        "unmatched_side_rows": 1,  # u9
        "side_rows_without_id": 0,
        "missing": {  # ids whose value is unknown, u7 included
            "gender": 2,
            "occupation": 2,
            "occ_top": 3,
            "occ_case": 2,
            "zip_prefix": 3,
            "zip_hash": 3,
            "age_bucket": 4,
            "inc": 4,
            "inc_log": 4,
            "inc_std": 4,
            "inc_fixed": 4,
        },
    }


# ---------------------------------------------------------------- multi-hot profiles

ITEMS_SCHEMA = "item_id string, class string, tags array<string>, labels string"
ITEMS = [
    ("i1", "Comedy  Animation Comedy", ["a", " B "], "x|y"),
    ("i2", "unknown", [], "y"),
    ("i3", "  Drama  ", None, None),
    ("i4", "", ["unknown", "c", ""], "|"),
    ("i5", None, ["b", None], "Y|z"),
    ("i6", "Comedy", ["a"], ""),
    ("i9", "Western Comedy", ["z"], "w"),  # not in the index
]
ITEM_IDS = ["i1", "i2", "i3", "i4", "i5", "i6", "i7"]  # i7: no row in the table
ITEM_FEATURES = yaml.safe_load("""
genres: {column: class, kind: multi_hot, separator: " ", ignore: [Unknown]}
top_genre: {column: class, kind: multi_hot, separator: " ", max_size: 1}
tags: {kind: multi_hot, ignore: [unknown]}
tag_hash: {column: tags, kind: multi_hot, hash_buckets: 3}
labels: {kind: multi_hot, separator: "|"}
""")


@pytest.fixture(scope="module")
def items_built(spark):
    items = spark.createDataFrame(ITEMS, ITEMS_SCHEMA)
    out, report = side_profiles(items, index(spark, ITEM_IDS, "item"), table("item", ITEM_FEATURES))
    rows = {ITEM_IDS[idx]: row for idx, row in by_key(out, "item_idx").items()}
    return out.dtypes, rows, report


def test_multi_hot_from_strings_and_lists(items_built):
    dtypes, rows, report = items_built
    assert dtypes == [("item_idx", "bigint"), *[(f, "array<int>") for f in ITEM_FEATURES]]
    assert sorted(rows) == ITEM_IDS
    genres = vocab(["comedy", "animation", "drama", "western"])
    tags = vocab(["a", "b", "c", "z"])
    labels = vocab(["x", "y", "z", "w"])  # "|" split literally, not as a regex
    expected = {  # item: (genres, tags, labels); sorted, distinct indexes; [0] when none
        "i1": (["animation", "comedy"], ["a", "b"], ["x", "y"]),
        "i2": ([], [], ["y"]),  # the ignored "unknown" genre; an empty list
        "i3": (["drama"], [], []),  # null list and null string
        "i4": ([], ["c"], []),  # "" and ignored tokens dropped; "|" has no token
        "i5": ([], ["b"], ["y", "z"]),  # a null inside the list
        "i6": (["comedy"], ["a"], []),
        "i7": ([], [], []),  # no side row
    }

    def indexes(values, vocabulary):
        return sorted(vocabulary[v] for v in values) or [0]

    for item, (g, t, lab) in expected.items():
        assert rows[item]["genres"] == indexes(g, genres), item
        assert rows[item]["tags"] == indexes(t, tags), item
        assert rows[item]["labels"] == indexes(lab, labels), item
    # max_size=1: only "comedy" (4 tokens in 3 rows; the others 1 each) is kept.
    assert rows["i1"]["top_genre"] == rows["i6"]["top_genre"] == [1]
    assert rows["i3"]["top_genre"] == [0]
    # Hashed tokens: indexes in 1..3, equal tokens alike (ignore is not declared: "unknown"
    # is a token here).
    assert set(rows["i6"]["tag_hash"]) <= set(rows["i1"]["tag_hash"])
    assert set(rows["i5"]["tag_hash"]) <= set(rows["i1"]["tag_hash"])
    assert all(1 <= h <= 3 for item in ("i1", "i4", "i5") for h in rows[item]["tag_hash"])
    assert rows["i2"]["tag_hash"] == rows["i3"]["tag_hash"] == rows["i7"]["tag_hash"] == [0]

    cards = {"genres": 5, "top_genre": 2, "tags": 5, "tag_hash": 4, "labels": 5}
    assert report["cardinalities"] == cards
    assert report["coverage"] == {
        "ids": 7,
        "with_side_row": 6,
        "without_side_row": 1,
        "unmatched_side_rows": 1,
        "side_rows_without_id": 0,
        "missing": {"genres": 4, "top_genre": 5, "tags": 3, "tag_hash": 3, "labels": 4},
    }


def test_profiles_without_features_and_with_typed_headers(spark):
    user_index = index(spark, ["a", "b"], "user")
    out, report = side_profiles(None, user_index, table("user", {}))
    assert out.columns == ["user_idx"]
    assert report["cardinalities"] == {}
    assert report["coverage"]["ids"] == 2
    assert report["coverage"]["without_side_row"] == 2

    # strip_types: a RecBole header; id_column: the ids under another name.
    typed = spark.createDataFrame([("a", "F")], ["uid:token", "gender:token"])
    features = {"g": {"column": "gender", "kind": "categorical"}}
    with pytest.raises(SchemaError, match="strip_types: true"):
        side_profiles(typed, user_index, table("user", features, id_column="uid"))
    spec = table("user", features, id_column="uid", strip_types=True)
    out, _ = side_profiles(typed, user_index, spec)
    assert sorted(tuple(r) for r in out.collect()) == [(0, 1), (1, 0)]  # b: no side row
    # A one-letter feature name (the profile's internal columns must not clash with it).
    spec = table("user", {"d": {"kind": "categorical"}})
    out, _ = side_profiles(typed.toDF("user_id", "d"), user_index, spec)
    assert sorted(tuple(r) for r in out.collect()) == [(0, 1), (1, 0)]
    # Rows without an id (null or blank, several of them) are counted and left out.
    blank = spark.createDataFrame(
        [("a", "F"), (None, "M"), ("  ", "X"), (None, "Y")], "user_id string, d string"
    )
    out, report = side_profiles(blank, user_index, spec)
    assert report["coverage"]["side_rows_without_id"] == 3
    assert report["coverage"]["unmatched_side_rows"] == 0
    assert report["cardinalities"] == {"d": 2}  # only "f": the id-less rows' values are out
    assert sorted(tuple(r) for r in out.collect()) == [(0, 1), (1, 0)]


# ---------------------------------------------------------------- profile errors


def test_profile_errors_name_the_column_and_the_fix(spark):
    user_index = index(spark, ["u1"], "user")
    users = spark.createDataFrame(USERS[:2], USERS_SCHEMA)
    gender = {"gender": {"kind": "categorical"}}

    def fails(side, features, match, **settings):
        with pytest.raises(SchemaError, match=match):
            side_profiles(side, user_index, table("user", features, **settings))

    fails(users, {"job": {"kind": "categorical"}}, r"the user table has no column\(s\) \['job'\]")
    fails(users, gender, r"no column\(s\) \['uid'\].*Declare the column", id_column="uid")
    typed = users.toDF(*[f"{c}:token" for c in users.columns])
    fails(typed, gender, r"RecBole types \(user_id:token.*declare strip_types: true")
    twice = spark.createDataFrame([USERS[0], USERS[0], USERS[1]], USERS_SCHEMA)
    fails(twice, gender, r"several rows for the same user_id.*\('u1', 2\)")
    fails(users.limit(0), gender, r"the user table is empty")
    blank = users.selectExpr("user_id", "'  ' AS gender")
    fails(blank, gender, r"column 'gender' has no value in any of its 2 rows")
    fails(
        users, {"gender": {"kind": "categorical", "ignore": ["m", "f"]}}, r"'gender' has no value"
    )
    no_age = users.selectExpr("user_id", "'abc' AS age")
    fails(no_age, {"age": {"kind": "numeric"}}, r"column 'age' has no number \(e.g. 'abc'\)")
    fails(
        users,
        {"g": {"column": "gender", "kind": "multi_hot"}},
        r"'gender' \(string\) is not a list.*`separator`",
    )
    lists = spark.createDataFrame([("u1", ["a"])], "user_id string, tags array<string>")
    fails(lists, {"tags": {"kind": "categorical"}}, r"'tags' is array<string>.*categorical feature")
    fails(lists, {"tags": {"kind": "multi_hot", "separator": ","}}, r"'tags' is array<string>")
    fails(None, gender, r"the user table is absent but features \['gender'\] are declared")
    with pytest.raises(SchemaError, match=r"^raw_users has no column\(s\) \['job'\]"):
        side_profiles(
            users, user_index, table("user", {"job": {"kind": "categorical"}}), what="raw_users"
        )
    with pytest.raises(SchemaError, match=r"the user index has no column\(s\) \['user_idx'\]"):
        side_profiles(users, user_index.drop("user_idx"), table("user", gender))


# ---------------------------------------------------------------- statistics

STATS_TRAIN = [
    # user, item, rating, timestamp, label
    (0, 0, 5.0, 1, 1),  # user 0 likes item 0 (genres 1, 2: 0.5 each; tag 1)
    (0, 1, 4.0, 2, 1),  # and item 1 (genre 2; tag 2)
    (0, 2, 1.0, 3, 0),  # a dislike: user 0 has positives, so it is not counted
    (1, 2, 2.0, 4, 0),  # user 1 has no positive: all their rows count
    (1, 3, 3.0, 5, 0),
]


def _item_features(spark):
    # item 0: genres 1, 2; item 1: genre 2; item 2: genre 3; item 3: no genre.
    return spark.createDataFrame(
        [(0, 1, [1, 2], [1]), (1, 1, [2], [2]), (2, 1, [3], [0]), (3, 0, [0], [1, 2])],
        "item_idx long, year int, genres array<int>, tags array<int>",
    )


def test_item_statistics_bayesian_mean(spark):
    train = spark.createDataFrame(
        [(0, 0, 5.0, 1, 1), (1, 0, 4.0, 2, 1), (0, 1, 1.0, 3, 0), (2, 1, None, 4, 0)],
        TRAIN_SCHEMA,
    )
    item_index = index(spark, ["a", "b", "c"], "item")
    out = item_statistics(train, item_index, ratings=True, prior_weight=2.0)
    assert out.dtypes == [
        ("item_idx", "bigint"),
        ("item_log_popularity", "float"),
        ("item_mean_rating", "float"),
    ]
    rows = by_key(out, "item_idx")
    m = 10.0 / 3.0  # the global train mean (null ratings left out)
    assert rows[0]["item_mean_rating"] == pytest.approx((9.0 + 2 * m) / 4, rel=1e-6)
    assert rows[1]["item_mean_rating"] == pytest.approx((1.0 + 2 * m) / 3, rel=1e-6)
    assert rows[2]["item_mean_rating"] == pytest.approx(m, rel=1e-6)  # absent from train
    assert rows[0]["item_log_popularity"] == pytest.approx(math.log(3), rel=1e-6)
    assert rows[1]["item_log_popularity"] == pytest.approx(math.log(3), rel=1e-6)  # 2 rows
    assert rows[2]["item_log_popularity"] == 0.0
    plain = by_key(item_statistics(train, item_index, ratings=True, prior_weight=0.0), "item_idx")
    assert plain[0]["item_mean_rating"] == pytest.approx(4.5)
    assert plain[1]["item_mean_rating"] == pytest.approx(1.0)
    assert plain[2]["item_mean_rating"] == pytest.approx(m, rel=1e-6)
    unrated = item_statistics(train.drop("rating"), item_index, ratings=False)
    assert unrated.columns == ["item_idx", "item_log_popularity"]
    with pytest.raises(SchemaError, match="prior_weight"):
        item_statistics(train, item_index, ratings=True, prior_weight=-1)
    with pytest.raises(SchemaError, match=r"train has no column\(s\) \['rating'\]"):
        item_statistics(train.drop("rating"), item_index, ratings=True)


def test_user_statistics_shares_activity_and_fallbacks(spark):
    train = spark.createDataFrame(STATS_TRAIN, TRAIN_SCHEMA)
    user_index = index(spark, ["a", "b", "c"], "user")
    items = _item_features(spark)
    out = user_statistics(
        train, user_index, items, {"genres": 5, "tags": 3}, ratings=True, prior_weight=0.0
    )
    assert out.dtypes == [
        ("user_idx", "bigint"),
        ("user_log_activity", "float"),
        ("user_mean_rating", "float"),
        ("user_genres_share", "array<float>"),
        ("user_tags_share", "array<float>"),
    ]
    rows = by_key(out, "user_idx")
    # User 0: genres {1: .5, 2: .5 + 1}; tags {1: 1, 2: 1}, over 2 positives.
    assert rows[0]["user_genres_share"] == pytest.approx([0.0, 0.25, 0.75, 0.0, 0.0])
    assert rows[0]["user_tags_share"] == pytest.approx([0.0, 0.5, 0.5])
    # User 1 (no positive): genres {3: 1, 0: 1}; tags {0: 1, 1: .5, 2: .5}, over 2 rows.
    assert rows[1]["user_genres_share"] == pytest.approx([0.5, 0.0, 0.0, 0.5, 0.0])
    assert rows[1]["user_tags_share"] == pytest.approx([0.5, 0.25, 0.25])
    assert rows[2]["user_genres_share"] == [0.0] * 5  # absent from train
    assert rows[2]["user_tags_share"] == [0.0] * 3
    assert rows[0]["user_log_activity"] == pytest.approx(math.log(4), rel=1e-6)
    assert rows[1]["user_log_activity"] == pytest.approx(math.log(3), rel=1e-6)
    assert rows[2]["user_log_activity"] == 0.0
    assert rows[0]["user_mean_rating"] == pytest.approx(10.0 / 3, rel=1e-6)
    assert rows[1]["user_mean_rating"] == pytest.approx(2.5)
    assert rows[2]["user_mean_rating"] == pytest.approx(3.0)  # the global train mean

    shrunk = by_key(
        user_statistics(train, user_index, items, {}, ratings=True, prior_weight=1.0), "user_idx"
    )
    assert shrunk[0]["user_mean_rating"] == pytest.approx((10.0 + 3.0) / 4)
    unrated = user_statistics(train.drop("rating"), user_index, items, {}, ratings=False)
    assert unrated.columns == ["user_idx", "user_log_activity"]

    with pytest.raises(SchemaError, match=r"train has no column\(s\) \['label'\]"):
        user_statistics(train.drop("label"), user_index, items, {}, ratings=False)
    with pytest.raises(SchemaError, match=r"item_profiles has no column\(s\) \['labels'\]"):
        user_statistics(train, user_index, items, {"labels": 3}, ratings=False)
    with pytest.raises(SchemaError, match=r"cardinality of 'genres' must be >= 1"):
        user_statistics(train, user_index, items, {"genres": 0}, ratings=False)
    with pytest.raises(SchemaError, match="prior_weight"):
        user_statistics(train, user_index, items, {}, ratings=True, prior_weight=-0.5)


def test_train_has_ratings(spark):
    train = spark.createDataFrame(STATS_TRAIN, TRAIN_SCHEMA)
    assert train_has_ratings(train)
    unrated = train.selectExpr("user_idx", "item_idx", "CAST(NULL AS FLOAT) AS rating", "label")
    assert not train_has_ratings(unrated)
    assert not train_has_ratings(train.drop("rating"))
    assert not train_has_ratings(train.limit(0))


# ---------------------------------------------------------------- ranker rows

RANKER_SCHEMA = FeatureSchema.from_params(
    yaml.safe_load("""
users:
  features:
    gender: {kind: categorical}
    income: {kind: numeric, transform: log}
items:
  features:
    year: {kind: numeric, transform: bucketize, boundaries: [1990]}
    genres: {kind: multi_hot, separator: " "}
""")
)
RANKER_LAYOUT = feature_layout(
    RANKER_SCHEMA,
    {"user_idx": 2, "item_idx": 4, "gender": 3, "year": 3, "genres": 4},
    ratings=True,
)


def _ranker_inputs(spark):
    user_profiles = spark.createDataFrame(
        [(0, 2, 1.5, 0.0), (1, 0, 0.7, 1.0)],
        "user_idx long, gender int, income float, income_missing float",
    )
    user_stats = spark.createDataFrame(
        [(0, 1.5, 3.5, [0.0, 0.25, 0.75, 0.0]), (1, 0.0, 3.0, [0.5, 0.0, 0.0, 0.5])],
        "user_idx long, user_log_activity float, user_mean_rating float, "
        "user_genres_share array<float>",
    )
    item_profiles = spark.createDataFrame(
        [(0, 1, [1, 3]), (1, 2, [2]), (2, 0, [0]), (3, 2, [2, 9])],
        "item_idx long, year int, genres array<int>",
    )
    item_stats = spark.createDataFrame(
        [(0, 2.0, 4.0), (1, 1.0, 3.25), (2, 0.0, 3.0), (3, 0.5, 3.5)],
        "item_idx long, item_log_popularity float, item_mean_rating float",
    )
    candidates = spark.createDataFrame(
        [
            (0, 0, 0.9, 1, "x"),
            (0, 1, 0.8, 0, "y"),
            (0, 2, 0.7, 0, "z"),
            (1, 0, 0.5, 0, "w"),
            (1, 2, 0.4, 1, "v"),
            (0, 3, 0.3, 0, "t"),
            (0, 0, 0.9, 1, "x"),  # a repeated candidate stays repeated
        ],
        "user_idx long, item_idx long, retrieval_score float, label int, extra string",
    )
    return candidates, user_profiles, item_profiles, user_stats, item_stats


def test_ranker_rows_columns_in_layout_order_and_affinity(spark):
    candidates, up, ip, us, its = _ranker_inputs(spark)
    out = ranker_rows(candidates, up, ip, us, its, RANKER_LAYOUT)
    user_columns = "gender income income_missing user_log_activity user_mean_rating"
    item_columns = "year genres item_log_popularity item_mean_rating"
    assert out.columns == [
        *candidates.columns,
        *user_columns.split(),
        *item_columns.split(),
        "genres_affinity",
    ]
    types = dict(out.dtypes)
    assert [types[c] for c in ("gender", "genres", "genres_affinity")] == [
        "int",
        "array<int>",
        "float",
    ]
    rows = out.collect()
    assert len(rows) == 7
    assert all(v is not None for row in rows for v in row)
    by_extra = {r["extra"]: r for r in rows}
    # The sum of the user's shares at the item's genres; 0 past the share array.
    affinity = {"x": 0.25 + 0.0, "y": 0.75, "z": 0.0, "w": 0.0 + 0.5, "v": 0.5, "t": 0.75}
    for extra, value in affinity.items():
        assert by_extra[extra]["genres_affinity"] == pytest.approx(value), extra
    w = by_extra["w"].asDict()  # user 1, item 0
    assert w["income"] == pytest.approx(0.7)
    assert {c: w[c] for c in (*user_columns.split(), *item_columns.split()) if c != "income"} == {
        "gender": 0,
        "income_missing": 1.0,
        "user_log_activity": 0.0,
        "user_mean_rating": 3.0,
        "year": 1,
        "genres": [1, 3],
        "item_log_popularity": 2.0,
        "item_mean_rating": 4.0,
    }


def test_ranker_rows_refuses_duplicating_missing_and_clashing_columns(spark):
    candidates, up, ip, us, its = _ranker_inputs(spark)
    layout = RANKER_LAYOUT
    # user 0 has 5 candidate rows: a second profile row for user 0 adds 5 rows.
    twice = up.union(up.where("user_idx = 0"))
    with pytest.raises(SchemaError, match=r"turned 7 candidate rows into 12: \['user_profiles'\]"):
        ranker_rows(candidates, twice, ip, us, its, layout)
    with pytest.raises(SchemaError, match=r"no row in item_stats \(2 rows\)"):
        ranker_rows(candidates, up, ip, us, its.where("item_idx != 2"), layout)
    with pytest.raises(SchemaError, match=r"candidates has no column\(s\) \['item_idx'\]"):
        ranker_rows(candidates.drop("item_idx"), up, ip, us, its, layout)
    with pytest.raises(SchemaError, match=r"user_stats has no column\(s\) \['user_genres_share'\]"):
        ranker_rows(candidates, up, ip, us.drop("user_genres_share"), its, layout)
    for column in ("genres", "genres_affinity", "_rr_mine"):
        clashing = candidates.withColumn(column, candidates.label)
        with pytest.raises(SchemaError, match=rf"already has column\(s\) \['{column}'\]"):
            ranker_rows(clashing, up, ip, us, its, layout)


# ---------------------------------------------------------------- train only

TRAIN_ONLY_SCHEMA = FeatureSchema.from_params(
    yaml.safe_load("""
users:
  features:
    gender: {kind: categorical}
    age: {kind: numeric, transform: standardize}
items:
  features:
    genres: {kind: multi_hot, separator: " "}
statistics: {user_prior_weight: 1.0, item_prior_weight: 1.0}
""")
)

# user_idx, item_idx, rating, timestamp: per user the latest row is test, the one before it
# validation, the rest train.
RATINGS = [
    (0, 0, 5.0, 1),
    (0, 1, 2.0, 2),
    (0, 2, 4.0, 3),  # validation
    (0, 3, 1.0, 4),  # test
    (1, 1, 4.0, 1),
    (1, 0, 3.0, 2),
    (1, 2, 5.0, 3),  # validation
    (1, 3, 2.0, 4),  # test
]


@pytest.fixture(scope="module")
def train_only_profiles(spark):
    users = spark.createDataFrame(
        [("a", "F", "30"), ("b", "M", "40")], "user_id string, gender string, age string"
    )
    items = spark.createDataFrame(
        [("p", "Drama"), ("q", "Comedy Drama"), ("r", "")], "item_id string, genres string"
    )
    user_index = index(spark, ["a", "b"], "user")
    item_index = index(spark, ["p", "q", "r", "s"], "item")
    up, user_report = side_profiles(users, user_index, TRAIN_ONLY_SCHEMA.users)
    ip, item_report = side_profiles(items, item_index, TRAIN_ONLY_SCHEMA.items)
    cards = {
        "user_idx": user_report["coverage"]["ids"],
        "item_idx": item_report["coverage"]["ids"],
        **user_report["cardinalities"],
        **item_report["cardinalities"],
    }
    yield user_index, item_index, up.cache(), ip.cache(), cards
    up.unpersist()
    ip.unpersist()


def _features(spark, profiles, rows):
    """Split as the features stage does, then build every ranker feature from train."""
    user_index, item_index, up, ip, cards = profiles
    ratings = spark.createDataFrame(
        [(u, i, r, t, int(r >= 4)) for u, i, r, t in rows], TRAIN_SCHEMA
    )
    params = {"strategy": "temporal", "test_size": 1, "validation_size": 1, "seed": 1}
    train, validation, test = split_interactions(ratings, params)
    has_ratings = train_has_ratings(train)
    layout = feature_layout(TRAIN_ONLY_SCHEMA, cards, ratings=has_ratings)
    shares = {feature: cards[feature] for _, feature, _ in layout.affinities}
    us = user_statistics(train, user_index, ip, shares, ratings=has_ratings, prior_weight=1.0)
    its = item_statistics(train, item_index, ratings=has_ratings, prior_weight=1.0)
    candidates = user_index.select("user_idx").crossJoin(item_index.select("item_idx"))
    out = ranker_rows(candidates, up, ip, us, its, layout)
    features = sorted(
        tuple(r) for r in out.select("user_idx", "item_idx", *layout.dense_features).collect()
    )
    held_out = validation.selectExpr("'validation' AS split", "user_idx", "item_idx").union(
        test.selectExpr("'test' AS split", "user_idx", "item_idx")
    )
    held_out = sorted(tuple(r) for r in held_out.collect())
    return layout, features, held_out


def test_features_come_from_train_only(spark, train_only_profiles):
    layout, base, held_out = _features(spark, train_only_profiles, RATINGS)
    assert held_out == [("test", 0, 3), ("test", 1, 3), ("validation", 0, 2), ("validation", 1, 2)]
    dense = "age age_missing user_log_activity user_mean_rating item_log_popularity"
    assert layout.dense_features == (*dense.split(), "item_mean_rating", "genres_affinity")

    # Flip every validation and test rating (and so its label): no feature moves.
    flipped = [(u, i, 6.0 - r if t >= 3 else r, t) for u, i, r, t in RATINGS]
    _, changed, changed_held_out = _features(spark, train_only_profiles, flipped)
    assert changed_held_out == held_out
    assert changed == base

    # Change one train rating (and so its label): features do move (the check above can fail).
    train_changed = [(u, i, 1.0 if (u, i) == (0, 0) else r, t) for u, i, r, t in RATINGS]
    _, moved, _ = _features(spark, train_only_profiles, train_changed)
    assert moved != base


# ---------------------------------------------------------------- real ML-100K side files


def _read_atomic(spark, path):
    """As the catalog's raw_users / raw_items read it: typed header, every column a string."""
    return spark.read.csv(str(path), sep="\t", header=True, inferSchema=False)


def _file_rows(path):
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        return [dict(zip(header, row, strict=True)) for row in reader]


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def test_real_ml100k_side_files_through_the_conf_schema(spark):
    params = yaml.safe_load(CONF.read_text(encoding="utf-8"))["feature_schema"]
    schema = FeatureSchema.from_params(params)
    users_txt, items_txt = _file_rows(RAW / "ml-100k.user"), _file_rows(RAW / "ml-100k.item")
    inter = strip_atomic_types(_read_atomic(spark, RAW / "ml-100k.inter"))
    user_index = build_id_index(inter, "user_id", "user_idx")
    item_index = build_id_index(inter, "item_id", "item_idx")

    up, user_report = side_profiles(
        _read_atomic(spark, RAW / "ml-100k.user"), user_index, schema.users
    )
    ip, item_report = side_profiles(
        _read_atomic(spark, RAW / "ml-100k.item"), item_index, schema.items
    )

    # Every user and item of the interactions has a side row, and every side row an id.
    assert user_report["coverage"] == {
        "ids": 943,
        "with_side_row": 943,
        "without_side_row": 0,
        "unmatched_side_rows": 0,
        "side_rows_without_id": 0,
        "missing": {"age_bucket": 0, "gender": 0, "occupation": 0, "zip_prefix": 0},
    }
    genres_of = {
        row["item_id"]: [g.lower() for g in row["class"].split() if g.lower() != "unknown"]
        for row in items_txt
    }
    no_year = sum(1 for row in items_txt if _number(row["release_year"]) is None)
    assert item_report["coverage"] == {
        "ids": 1682,
        "with_side_row": 1682,
        "without_side_row": 0,
        "unmatched_side_rows": 0,
        "side_rows_without_id": 0,
        "missing": {
            "year_bucket": no_year,
            "genres": sum(1 for genres in genres_of.values() if not genres),
        },
    }

    # Cardinalities agree with the files.
    gender = vocab(row["gender"].strip().lower() for row in users_txt)
    zips = vocab(row["zip_code"].strip().lower()[:1] for row in users_txt)
    genres = vocab(g for values in genres_of.values() for g in values)
    assert user_report["cardinalities"] == {
        "age_bucket": 8,
        "gender": len(gender) + 1,
        "occupation": len({row["occupation"].strip().lower() for row in users_txt}) + 1,
        "zip_prefix": len(zips) + 1,
    }
    assert item_report["cardinalities"] == {"year_bucket": 10, "genres": len(genres) + 1}
    assert (user_report["cardinalities"]["gender"], item_report["cardinalities"]["genres"]) == (
        3,
        19,
    )

    # One row per id, and the values of a known user and item.
    assert (up.count(), ip.count()) == (943, 1682)
    user = up.join(user_index, "user_idx").where("user_id = '1'").first()  # 24, M, 85711
    assert (user["age_bucket"], user["gender"], user["zip_prefix"]) == (2, gender["m"], zips["8"])
    item = ip.join(item_index, "item_idx").where("item_id = '1'").first()  # Toy Story, 1995
    assert item["genres"] == sorted(genres[g] for g in genres_of["1"])
    assert item["year_bucket"] == 8  # 1995 <= year < 1997
