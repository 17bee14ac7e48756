"""recsys_kedro.data.side_features: profiles, train-only statistics and ranker rows."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from recsys_kedro.data.interactions import build_id_index, split_interactions
from recsys_kedro.data.side_features import (
    DENSE_FEATURES,
    SPARSE_FEATURES,
    cardinalities,
    genre_vocabulary,
    item_profiles,
    item_statistics,
    ranker_rows,
    strip_atomic_types,
    user_profiles,
    user_statistics,
    user_vocabularies,
)

RAW = Path(__file__).resolve().parents[2] / "data" / "01_raw" / "ml-100k"

USERS_SCHEMA = "user_id string, age string, gender string, occupation string, zip_code string"
ITEMS_SCHEMA = "item_id string, movie_title string, release_year string, class string"
TRAIN_SCHEMA = "user_idx long, item_idx long, rating float, timestamp long, label int"


def index(spark, ids, id_col, idx_col):
    return spark.createDataFrame(
        [(str(i), n) for n, i in enumerate(ids)], f"{id_col} string, {idx_col} long"
    )


def by_key(df, key):
    return {row[key]: row.asDict() for row in df.collect()}


# ---------------------------------------------------------------- strip_atomic_types


def test_strip_atomic_types_renames_typed_columns_only(spark):
    df = spark.createDataFrame([("1", "2", "3")], ["user_id:token", "plain", "class:token_seq"])
    assert strip_atomic_types(df).columns == ["user_id", "plain", "class"]


def test_strip_atomic_types_refuses_clashing_names(spark):
    df = spark.createDataFrame([("1", "2")], ["age:token", "age"])
    with pytest.raises(ValueError, match=r"duplicate column.*age"):
        strip_atomic_types(df)


# ---------------------------------------------------------------- user profiles

USERS = [
    # user_id, age, gender, occupation, zip
    ("u1", "17", "M", "writer", "02139"),
    ("u2", "18", "F", "artist", "94043"),
    ("u3", "56", " m ", "Writer", "T8H1N"),
    ("u4", "", "", "", ""),
    ("u5", "abc", "F", "nurse", None),
    ("u9", "30", "F", "doctor", "10001"),  # in the file, not in the index
]


def test_user_profiles_vocabularies_buckets_and_unknowns(spark):
    users = spark.createDataFrame(USERS, USERS_SCHEMA)
    user_index = index(spark, ["u1", "u2", "u3", "u4", "u5", "u6"], "user_id", "user_idx")
    out = user_profiles(users, user_index)

    assert out.dtypes == [
        ("user_idx", "bigint"),
        ("age_bucket", "int"),
        ("gender", "int"),
        ("occupation", "int"),
        ("zip_prefix", "int"),
    ]
    # Sorted, normalised vocabularies: gender f=1, m=2; occupation artist=1, doctor=2
    # (u9 is in the file), nurse=3, writer=4.
    assert user_vocabularies(users) == {
        "gender": ["f", "m"],
        "occupation": ["artist", "doctor", "nurse", "writer"],
    }
    rows = by_key(out, "user_idx")
    assert len(rows) == 6  # every user of the index, and only those
    expected = {
        0: (1, 2, 4, 1),  # 17 < 18 -> 1; zip '0' -> 1
        1: (2, 1, 1, 10),  # 18 is a boundary -> 2; zip '9' -> 10
        2: (7, 2, 4, 11),  # 56+ -> 7; ' m ' == 'm'; 'Writer' == 'writer'; letter -> 11
        3: (0, 0, 0, 0),  # every field empty
        4: (0, 1, 3, 0),  # age not a number; zip null
        5: (0, 0, 0, 0),  # no row in the user file at all
    }
    for idx, (age, gender, occupation, zip_prefix) in expected.items():
        row = rows[idx]
        assert (row["age_bucket"], row["gender"], row["occupation"], row["zip_prefix"]) == (
            age,
            gender,
            occupation,
            zip_prefix,
        ), idx


def test_user_profiles_pinned_vocabulary_maps_unseen_values_to_zero(spark):
    users = spark.createDataFrame(USERS[:2], USERS_SCHEMA)
    user_index = index(spark, ["u1", "u2"], "user_id", "user_idx")
    out = by_key(
        user_profiles(
            users,
            user_index,
            age_buckets=(10, 20),
            vocabularies={"gender": ["f", "m", "x"], "occupation": ["writer"]},
        ),
        "user_idx",
    )
    assert (out[0]["age_bucket"], out[0]["gender"], out[0]["occupation"]) == (2, 2, 1)
    assert (out[1]["age_bucket"], out[1]["gender"], out[1]["occupation"]) == (2, 1, 0)


def test_user_profiles_errors(spark):
    user_index = index(spark, ["u1"], "user_id", "user_idx")
    no_zip = spark.createDataFrame([("u1", "20", "M", "writer")], USERS_SCHEMA.rsplit(",", 1)[0])
    with pytest.raises(ValueError, match=r"users is missing.*zip_code"):
        user_profiles(no_zip, user_index)
    typed = no_zip.toDF("user_id:token", "age:token", "gender:token", "occupation:token")
    with pytest.raises(ValueError, match="strip_atomic_types"):
        user_profiles(typed, user_index)
    users = spark.createDataFrame(USERS[:1] * 2, USERS_SCHEMA)
    with pytest.raises(ValueError, match=r"several rows for the same user_id.*u1"):
        user_profiles(users, user_index)
    with pytest.raises(ValueError, match="age_buckets"):
        user_profiles(
            spark.createDataFrame(USERS[:1], USERS_SCHEMA), user_index, age_buckets=(30, 20)
        )
    with pytest.raises(ValueError, match=r"user_index is missing.*user_idx"):
        user_profiles(spark.createDataFrame(USERS[:1], USERS_SCHEMA), user_index.drop("user_idx"))


# ---------------------------------------------------------------- item profiles

ITEMS = [
    ("i1", "A", "1995", "Comedy Animation Comedy"),
    ("i2", "B", "V", "unknown"),
    ("i3", "C", "", "  Drama  "),
    ("i4", "D", "1939", ""),
    ("i5", "E", "1997", None),
    ("i9", "F", "1980", "Western"),  # not in the index
]


def test_item_profiles_genres_never_empty_and_years_bucketed(spark):
    items = spark.createDataFrame(ITEMS, ITEMS_SCHEMA)
    item_index = index(spark, ["i1", "i2", "i3", "i4", "i5", "i6"], "item_id", "item_idx")
    assert genre_vocabulary(items) == ["Animation", "Comedy", "Drama", "Western"]
    out = item_profiles(items, item_index, year_buckets=(1940, 1990, 1996))
    assert out.dtypes == [("item_idx", "bigint"), ("year_bucket", "int"), ("genres", "array<int>")]
    rows = by_key(out, "item_idx")
    assert len(rows) == 6
    expected = {
        0: (3, [1, 2]),  # 1990 <= 1995 < 1996; duplicates dropped, sorted
        1: (0, [0]),  # 'V' is no year; 'unknown' is no genre
        2: (0, [3]),
        3: (1, [0]),  # before the first boundary; empty class
        4: (4, [0]),  # after the last boundary; null class
        5: (0, [0]),  # no row in the item file
    }
    for idx, (year_bucket, genres) in expected.items():
        assert (rows[idx]["year_bucket"], rows[idx]["genres"]) == (year_bucket, genres), idx
    assert all(len(r["genres"]) > 0 for r in rows.values())


def test_item_profiles_pinned_genres_and_errors(spark):
    items = spark.createDataFrame(ITEMS[:1], ITEMS_SCHEMA)
    item_index = index(spark, ["i1"], "item_id", "item_idx")
    out = item_profiles(items, item_index, genres=["Action", "Comedy"]).first()
    assert out["genres"] == [2]  # Animation is not in the pinned vocabulary
    with pytest.raises(ValueError, match=r"items is missing.*class"):
        item_profiles(items.drop("class"), item_index)
    with pytest.raises(ValueError, match=r"item_index is missing.*item_id"):
        item_profiles(items, item_index.drop("item_id"))


def test_cardinalities_are_max_index_plus_one(spark):
    up = spark.createDataFrame(
        [(0, 1, 2, 0, 11), (4, 7, 0, 21, 3)],
        "user_idx long, age_bucket int, gender int, occupation int, zip_prefix int",
    )
    ip = spark.createDataFrame(
        [(0, 3, [0]), (9, 1, [2, 18])], "item_idx long, year_bucket int, genres array<int>"
    )
    assert cardinalities(up, ip) == {
        "user_idx": 5,
        "age_bucket": 8,
        "gender": 3,
        "occupation": 22,
        "zip_prefix": 12,
        "item_idx": 10,
        "year_bucket": 4,
        "genres": 19,
    }
    with pytest.raises(ValueError, match="user_profiles is empty"):
        cardinalities(up.limit(0), ip)
    with pytest.raises(ValueError, match=r"item_profiles is missing.*genres"):
        cardinalities(up, ip.drop("genres"))


# ---------------------------------------------------------------- statistics


def test_item_statistics_bayesian_mean(spark):
    train = spark.createDataFrame(
        [(0, 0, 5.0, 1, 1), (1, 0, 4.0, 2, 1), (0, 1, 1.0, 3, 0)], TRAIN_SCHEMA
    )
    item_index = index(spark, ["a", "b", "c"], "item_id", "item_idx")
    rows = by_key(item_statistics(train, item_index, prior_weight=2.0), "item_idx")
    m = 10.0 / 3.0  # global train mean
    assert rows[0]["item_mean_rating"] == pytest.approx((9.0 + 2 * m) / 4, rel=1e-6)
    assert rows[1]["item_mean_rating"] == pytest.approx((1.0 + 2 * m) / 3, rel=1e-6)
    assert rows[2]["item_mean_rating"] == pytest.approx(m, rel=1e-6)  # absent from train
    assert rows[0]["item_log_popularity"] == pytest.approx(math.log(3), rel=1e-6)
    assert rows[1]["item_log_popularity"] == pytest.approx(math.log(2), rel=1e-6)
    assert rows[2]["item_log_popularity"] == 0.0
    plain = by_key(item_statistics(train, item_index, prior_weight=0.0), "item_idx")
    assert plain[0]["item_mean_rating"] == pytest.approx(4.5)
    assert plain[2]["item_mean_rating"] == pytest.approx(m, rel=1e-6)
    with pytest.raises(ValueError, match="prior_weight"):
        item_statistics(train, item_index, prior_weight=-1)
    with pytest.raises(ValueError, match="train has no ratings"):
        item_statistics(train.limit(0), item_index)
    with pytest.raises(ValueError, match=r"train is missing.*rating"):
        item_statistics(train.drop("rating"), item_index)


def _item_genres(spark):
    # item 0: genres 1, 2; item 1: genre 2; item 2: genre 3; item 3: no genre
    return spark.createDataFrame(
        [(0, 1, [1, 2]), (1, 1, [2]), (2, 1, [3]), (3, 0, [0])],
        "item_idx long, year_bucket int, genres array<int>",
    )


def test_user_statistics_genre_share_activity_and_fallbacks(spark):
    train = spark.createDataFrame(
        [
            (0, 0, 5.0, 1, 1),  # user 0 likes item 0 (genres 1, 2): 0.5 each
            (0, 1, 4.0, 2, 1),  # and item 1 (genre 2): 1.0
            (0, 2, 1.0, 3, 0),  # a dislike: not counted, user 0 has positives
            (1, 2, 2.0, 4, 0),  # user 1 has no positive: falls back to all rows
            (1, 3, 3.0, 5, 0),
        ],
        TRAIN_SCHEMA,
    )
    user_index = index(spark, ["a", "b", "c"], "user_id", "user_idx")
    out = user_statistics(train, user_index, _item_genres(spark), 5)
    assert out.dtypes == [
        ("user_idx", "bigint"),
        ("user_log_activity", "float"),
        ("user_mean_rating", "float"),
        ("user_genre_share", "array<float>"),
    ]
    rows = by_key(out, "user_idx")
    assert rows[0]["user_genre_share"] == pytest.approx([0.0, 0.25, 0.75, 0.0, 0.0])
    assert rows[1]["user_genre_share"] == pytest.approx([0.5, 0.0, 0.0, 0.5, 0.0])
    assert rows[2]["user_genre_share"] == [0.0] * 5  # absent from train
    assert rows[0]["user_log_activity"] == pytest.approx(math.log(4), rel=1e-6)
    assert rows[2]["user_log_activity"] == 0.0
    assert rows[0]["user_mean_rating"] == pytest.approx(10.0 / 3, rel=1e-6)
    assert rows[1]["user_mean_rating"] == pytest.approx(2.5)
    assert rows[2]["user_mean_rating"] == pytest.approx(3.0)  # global train mean
    with pytest.raises(ValueError, match=r"genre index 3 but n_genres=3"):
        user_statistics(train, user_index, _item_genres(spark), 3)
    with pytest.raises(ValueError, match=r"train is missing.*label"):
        user_statistics(train.drop("label"), user_index, _item_genres(spark), 5)


# ---------------------------------------------------------------- ranker rows


def _ranker_inputs(spark):
    user_profiles_df = spark.createDataFrame(
        [(0, 2, 1, 3, 4), (1, 0, 0, 0, 0)],
        "user_idx long, age_bucket int, gender int, occupation int, zip_prefix int",
    )
    user_stats = spark.createDataFrame(
        [(0, 1.5, 3.5, [0.0, 0.25, 0.75, 0.0]), (1, 0.0, 3.0, [0.0, 0.0, 0.0, 0.0])],
        "user_idx long, user_log_activity float, user_mean_rating float, "
        "user_genre_share array<float>",
    )
    item_profiles_df = spark.createDataFrame(
        [(0, 1, [1, 3]), (1, 2, [2]), (2, 0, [0])],
        "item_idx long, year_bucket int, genres array<int>",
    )
    item_stats = spark.createDataFrame(
        [(0, 2.0, 4.0), (1, 1.0, 3.25), (2, 0.0, 3.0)],
        "item_idx long, item_log_popularity float, item_mean_rating float",
    )
    candidates = spark.createDataFrame(
        [
            (0, 0, 0.9, 1, 1, "x"),
            (0, 1, 0.8, 2, 0, "y"),
            (0, 2, 0.7, 3, 0, "z"),
            (1, 0, 0.5, 1, 0, "w"),
            (0, 0, 0.9, 1, 1, "x"),  # a repeated candidate stays repeated
        ],
        "user_idx long, item_idx long, retrieval_score float, retrieval_rank int, label int, "
        "extra string",
    )
    return candidates, user_profiles_df, item_profiles_df, user_stats, item_stats


def test_ranker_rows_features_affinity_and_row_count(spark):
    candidates, up, ip, us, its = _ranker_inputs(spark)
    out = ranker_rows(candidates, up, ip, us, its)
    assert out.columns == candidates.columns + list(SPARSE_FEATURES) + list(DENSE_FEATURES)
    rows = out.collect()
    assert len(rows) == candidates.count()
    for row in rows:
        assert all(v is not None for v in row), row
    first = next(r for r in rows if r["extra"] == "x")
    # user 0's share [0, .25, .75, 0] over item 0's genres [1, 3]: 0.25 + 0.0
    assert first["genre_affinity"] == pytest.approx(0.25)
    assert (first["age_bucket"], first["occupation"], first["year_bucket"]) == (2, 3, 1)
    assert (first["user_mean_rating"], first["item_mean_rating"]) == (3.5, 4.0)
    by_extra = {r["extra"]: r for r in rows}
    assert by_extra["y"]["genre_affinity"] == pytest.approx(0.75)  # genre 2
    assert by_extra["z"]["genre_affinity"] == pytest.approx(0.0)  # no genre: share[0]
    assert by_extra["w"]["genre_affinity"] == pytest.approx(0.0)
    assert by_extra["w"]["item_log_popularity"] == pytest.approx(2.0)
    assert dict(out.dtypes)["genres"] == "array<int>"
    assert {dict(out.dtypes)[c] for c in DENSE_FEATURES} == {"float"}


def test_ranker_rows_refuses_duplicating_and_missing_keys(spark):
    candidates, up, ip, us, its = _ranker_inputs(spark)
    # user 0 has 4 candidate rows: a second profile row for user 0 adds 4 rows
    twice = up.union(up.where("user_idx = 0"))
    with pytest.raises(ValueError, match=r"turned 5 candidate rows into 9: \['user_profiles'\]"):
        ranker_rows(candidates, twice, ip, us, its)
    with pytest.raises(ValueError, match=r"no row in item_stats \(1 rows\)"):
        ranker_rows(candidates, up, ip, us, its.where("item_idx != 2"))
    with pytest.raises(ValueError, match=r"candidates is missing.*item_idx"):
        ranker_rows(candidates.drop("item_idx"), up, ip, us, its)
    with pytest.raises(ValueError, match=r"already has column.*genres"):
        ranker_rows(candidates.withColumn("genres", candidates.label), up, ip, us, its)


# ---------------------------------------------------------------- train only


def _features(spark, ratings):
    """Split as the features stage does, then build every ranker feature from train."""
    params = {"strategy": "temporal", "test_size": 1, "validation_size": 1, "seed": 1}
    train, validation, test = split_interactions(ratings, params)
    users = spark.createDataFrame(
        [("a", "30", "F", "writer", "1"), ("b", "40", "M", "artist", "2")], USERS_SCHEMA
    )
    items = spark.createDataFrame(
        [("p", "", "1990", "Drama"), ("q", "", "1995", "Comedy Drama"), ("r", "", "", "")],
        ITEMS_SCHEMA,
    )
    user_index = index(spark, ["a", "b"], "user_id", "user_idx")
    item_index = index(spark, ["p", "q", "r", "s"], "item_id", "item_idx")
    up = user_profiles(users, user_index)
    ip = item_profiles(items, item_index)
    sizes = cardinalities(up, ip)
    us = user_statistics(train, user_index, ip, sizes["genres"])
    its = item_statistics(train, item_index, prior_weight=1.0)
    candidates = (
        user_index.select("user_idx")
        .crossJoin(item_index.select("item_idx"))
        .selectExpr("user_idx", "item_idx", "0.5f AS retrieval_score", "1 AS retrieval_rank")
    )
    out = ranker_rows(candidates, up, ip, us, its)
    features = sorted(
        tuple(r) for r in out.select("user_idx", "item_idx", *DENSE_FEATURES).collect()
    )
    split_keys = [
        sorted(tuple(r) for r in s.select("user_idx", "item_idx").collect())
        for s in (
            validation,
            test,
        )
    ]
    return features, split_keys


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


def _ratings(spark, rows):
    return spark.createDataFrame([(u, i, r, t, int(r >= 4)) for u, i, r, t in rows], TRAIN_SCHEMA)


def test_features_come_from_train_only(spark):
    base, base_splits = _features(spark, _ratings(spark, RATINGS))
    assert base_splits == [[(0, 2), (1, 2)], [(0, 3), (1, 3)]]

    # Flip every validation and test rating (and so its label): no feature moves.
    held_out = [(u, i, 6.0 - r if t >= 3 else r, t) for u, i, r, t in RATINGS]
    changed, changed_splits = _features(spark, _ratings(spark, held_out))
    assert changed_splits == base_splits
    assert changed == base

    # Change one train rating: features do move (so the comparison above can fail).
    train_changed = [(u, i, 1.0 if (u, i) == (0, 0) else r, t) for u, i, r, t in RATINGS]
    moved, _ = _features(spark, _ratings(spark, train_changed))
    assert moved != base


# ---------------------------------------------------------------- real side files


def _read_atomic(spark, path):
    return strip_atomic_types(spark.read.csv(str(path), sep="\t", header=True))


def _file_rows(path):
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        return [dict(zip(header, row, strict=True)) for row in reader]


def test_real_ml100k_side_files(spark):
    user_path, item_path = RAW / "ml-100k.user", RAW / "ml-100k.item"
    users_txt, items_txt = _file_rows(user_path), _file_rows(item_path)
    genres_txt = {g for row in items_txt for g in row["class"].split() if g.lower() != "unknown"}
    occupations_txt = {row["occupation"].strip().lower() for row in users_txt}
    no_genre_txt = sum(
        1 for row in items_txt if not [g for g in row["class"].split() if g.lower() != "unknown"]
    )

    users = _read_atomic(spark, user_path)
    items = _read_atomic(spark, item_path)
    assert users.columns == ["user_id", "age", "gender", "occupation", "zip_code"]
    user_index = build_id_index(users, "user_id", "user_idx")
    item_index = build_id_index(items, "item_id", "item_idx")
    up = user_profiles(users, user_index)
    ip = item_profiles(items, item_index)
    sizes = cardinalities(up, ip)

    assert sizes["user_idx"] == len({r["user_id"] for r in users_txt}) == 943
    assert sizes["item_idx"] == len({r["item_id"] for r in items_txt}) == 1682
    assert sizes["genres"] == len(genres_txt) + 1
    assert sizes["occupation"] == len(occupations_txt) + 1
    assert sizes["gender"] == 3
    assert sizes["age_bucket"] <= 8
    assert sizes["zip_prefix"] <= 12
    assert genre_vocabulary(items) == sorted(genres_txt)
    assert up.count() == 943
    assert up.where("gender = 0 OR occupation = 0 OR age_bucket = 0").count() == 0
    assert ip.where("size(genres) = 0").count() == 0
    assert ip.where("genres = array(0)").count() == no_genre_txt
