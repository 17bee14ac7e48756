"""Tests for recsys_kedro.models.als (real Spark MLlib ALS on tiny planted data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_kedro.evaluation.retrieval import (
    embedding_score_fn,
    full_catalogue_topk_metrics,
    popularity_score_fn,
)
from recsys_kedro.models.als import (
    als_search_space,
    boundary_hits,
    factor_matrices,
    fit_als,
    preferences,
    search_als,
    topk_metrics,
)

# Two user groups, each liking a disjoint block of items. Group B is larger, so the
# globally most popular items are B items: popularity recommends them to group A too.
GROUP_A, GROUP_B = range(0, 8), range(8, 20)
BLOCK_A, BLOCK_B = range(0, 8), range(8, 16)
N_USERS, N_ITEMS = 22, 18  # users 20-21 and items 16-17 never occur: zero factor rows
FAST = {"max_iter": 5, "seed": 0, "num_blocks": 2}
K = 3  # each user holds out the 3 items of its block it has not seen in train


def _planted() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train rows (5 positives of the user's block, 1 negative) and held-out positives."""
    rng = np.random.default_rng(0)
    train, held_out = [], []
    for users, block, other in ((GROUP_A, BLOCK_A, BLOCK_B), (GROUP_B, BLOCK_B, BLOCK_A)):
        for u in users:
            liked = rng.permutation(list(block))
            train += [(u, int(i), 1, 5.0) for i in liked[:5]]
            held_out += [(u, int(i)) for i in liked[5:]]
            train.append((u, int(rng.choice(list(other))), 0, 1.0))  # a disliked item
    cols = ["user_idx", "item_idx", "label", "rating"]
    return pd.DataFrame(train, columns=cols), pd.DataFrame(held_out, columns=cols[:2])


@pytest.fixture(scope="module")
def planted(spark):
    train, held_out = _planted()
    return spark.createDataFrame(train), train, held_out


@pytest.fixture(scope="module")
def fitted(planted):
    train_df, _, _ = planted
    return fit_als(train_df, rank=4, reg_param=0.1, alpha=10.0, signal="positives", **FAST)


def _metrics(score_fn, train: pd.DataFrame, held_out: pd.DataFrame) -> dict[str, float]:
    return full_catalogue_topk_metrics(
        score_fn,
        n_items=N_ITEMS,
        test_users=held_out["user_idx"].to_numpy(),
        test_items=held_out["item_idx"].to_numpy(),
        exclude_users=train["user_idx"].to_numpy(),
        exclude_items=train["item_idx"].to_numpy(),
        ks=[K],
    )


def test_als_learns_the_blocks_and_beats_popularity(planted, fitted):
    _, train, held_out = planted
    users, items = factor_matrices(fitted, N_USERS, N_ITEMS)
    als = _metrics(embedding_score_fn(users, items), train, held_out)
    positives = train.loc[train["label"] == 1, "item_idx"].to_numpy()
    popularity = _metrics(popularity_score_fn(positives, N_ITEMS), train, held_out)
    assert als[f"ndcg@{K}"] > popularity[f"ndcg@{K}"] + 0.4  # measured: 0.89 vs 0.28
    assert als[f"recall@{K}"] > 0.75  # most of the top K are the unseen items of the block


def test_factor_matrices_are_dense_with_zero_rows_for_unseen_ids(fitted):
    users, items = factor_matrices(fitted, N_USERS, N_ITEMS)
    assert users.shape == (N_USERS, 4) and items.shape == (N_ITEMS, 4)
    assert users.dtype == np.float32 and items.dtype == np.float32
    assert not users[20:].any() and not items[16:].any()
    assert (np.abs(users[:20]).sum(axis=1) > 0).all()
    assert (np.abs(items[:16]).sum(axis=1) > 0).all()
    # the dot products are what Spark's own model would score
    row = fitted.userFactors.where("id = 3").first()
    np.testing.assert_allclose(users[3], np.asarray(row["features"], np.float32))


def test_factor_matrices_reject_ids_beyond_the_index(fitted):
    with pytest.raises(ValueError, match=r"outside \[0, n_users=5\)"):
        factor_matrices(fitted, 5, N_ITEMS)


#: A small space in the format of two_tower.evaluation.als.search.space.
SPACE = [
    {"name": "rank", "type": "int", "low": 1, "high": 6},
    {"name": "reg_param", "type": "float", "low": 0.01, "high": 1.0, "log": True},
    {"name": "alpha", "type": "float", "low": 1.0, "high": 20.0, "log": True},
]


def test_the_search_keeps_the_best_validation_trial(planted, spark):
    train_df, train, held_out = planted
    result = search_als(
        train_df,
        spark.createDataFrame(held_out),
        N_USERS,
        N_ITEMS,
        SPACE,
        n_trials=3,
        select_by=f"ndcg@{K}",
        ks=[1, 5],
        **FAST,
    )
    table = result.table
    assert len(table) == 3 and table["max_iter"].eq(FAST["max_iter"]).all()  # not searched
    assert table["rank"].between(1, 6).all() and table["alpha"].between(1.0, 20.0).all()
    assert table[["rank", "alpha"]].drop_duplicates().shape[0] == 3  # three other points
    for col in ("recall@1", "ndcg@1", "recall@5", "ndcg@5", f"ndcg@{K}", "n_eval_users", "fit_s"):
        assert col in table.columns, col
    best = table.iloc[int(table[f"ndcg@{K}"].to_numpy().argmax())]
    assert result.params == {
        "rank": int(best["rank"]),
        "reg_param": best["reg_param"],
        "alpha": best["alpha"],
        "max_iter": FAST["max_iter"],
    }
    assert result.select_by == f"ndcg@{K}"
    assert result.model.rank == result.params["rank"]
    # the kept model is the chosen trial's, and the Spark figures that chose it are the
    # one-process figures of its dense factors (users 20-21 never seen: zero vectors)
    users, items = factor_matrices(result.model, N_USERS, N_ITEMS)
    again = _metrics(embedding_score_fn(users, items), train, held_out)
    assert again[f"ndcg@{K}"] == pytest.approx(best[f"ndcg@{K}"], abs=1e-12)
    assert again["n_eval_users"] == best["n_eval_users"]


def test_a_user_als_never_saw_is_scored_with_zeros_as_in_one_process(planted, fitted, spark):
    """Users 20 and 21 have no interaction (no factors): every item scores 0 for them, and
    the lowest item indexes rank first, in Spark as with the dense matrices."""
    _, train, _ = planted
    unseen = pd.DataFrame({"user_idx": [20, 20, 21], "item_idx": [0, 17, 1]})
    held_out = pd.concat([_planted()[1], unseen], ignore_index=True)
    per_user = topk_metrics(
        fitted, spark.createDataFrame(held_out), spark.createDataFrame(train), N_ITEMS, [K]
    ).toPandas()
    users, items = factor_matrices(fitted, N_USERS, N_ITEMS)
    reference = full_catalogue_topk_metrics(
        embedding_score_fn(users, items), N_ITEMS,
        held_out["user_idx"].to_numpy(), held_out["item_idx"].to_numpy(),
        train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), ks=[K], per_user=True,
    )["per_user"]  # fmt: skip
    per_user = per_user.sort_values("user_idx")
    np.testing.assert_array_equal(per_user["user_idx"], reference["users"])
    np.testing.assert_allclose(per_user[f"ndcg@{K}"], reference[f"ndcg@{K}"], atol=1e-12)
    assert per_user.set_index("user_idx").loc[20, f"recall@{K}"] > 0  # item 0 ranks first


def test_a_choice_at_an_end_of_its_range_is_named():
    space = als_search_space([*SPACE, {"name": "max_iter", "type": "int", "low": 5, "high": 25}])
    inside = {"rank": 3, "reg_param": 0.1, "alpha": 4.0, "max_iter": 15}
    assert boundary_hits(space, inside) == []
    edges = {**inside, "rank": 6, "reg_param": 0.0105, "max_iter": 25}
    assert boundary_hits(space, edges) == [
        "rank at the high end (6)", "reg_param at the low end (0.0105)",
        "max_iter at the high end (25)",
    ]  # fmt: skip


def test_preferences_of_each_signal(planted):
    train_df, train, _ = planted
    positives = preferences(train_df, "positives").toPandas()
    assert len(positives) == int(train["label"].sum())
    assert set(positives["preference"]) == {1.0}
    ratings = preferences(train_df, "ratings").toPandas()
    assert len(ratings) == len(train)
    assert sorted(set(ratings["preference"])) == [1.0, 5.0]


@pytest.mark.parametrize(
    ("space", "match"),
    [
        (SPACE[:2], r"missing \['alpha'\]"),
        ([*SPACE, {"name": "beta", "type": "int", "low": 1, "high": 2}], r"unknown \['beta'\]"),
        ([{**SPACE[0], "type": "float"}, *SPACE[1:]], "rank is a whole number"),
        ([{**SPACE[0], "low": 0}, *SPACE[1:]], "rank must be >= 1"),
        ([SPACE[0], {**SPACE[1], "low": -0.1, "log": False}, SPACE[2]], "reg_param must be >= 0"),
        ([*SPACE[:2], {"name": "alpha", "choices": [0.0, 1.0]}], "alpha must be >= 1e-12"),
    ],
)
def test_bad_spaces_are_rejected(space, match):
    with pytest.raises(ValueError, match=match):
        als_search_space(space)


def test_bad_settings_fail_before_any_fit(planted):
    train_df, _, held_out = planted
    args = (held_out, N_USERS, N_ITEMS)
    with pytest.raises(ValueError, match="select_by"):
        search_als(train_df, *args, SPACE, select_by="auc@10")
    with pytest.raises(ValueError, match="signal must be one of"):
        search_als(train_df, *args, SPACE, signal="clicks")
    with pytest.raises(ValueError, match="max_iter"):
        search_als(train_df, *args, SPACE, max_iter=0)
    # the test session has no checkpoint folder: a long ALS would overflow the driver's stack
    long_runs = [*SPACE, {"name": "max_iter", "type": "int", "low": 5, "high": 30}]
    with pytest.raises(ValueError, match="max_iter 30.*spark.checkpoint.dir"):
        search_als(train_df, *args, long_runs)
    with pytest.raises(ValueError, match="max_iter 20.*spark.checkpoint.dir"):
        fit_als(train_df, rank=2, reg_param=0.1, alpha=1.0, max_iter=20)
    with pytest.raises(ValueError, match=r"lack the column\(s\) \['rating'\]"):
        fit_als(train_df.drop("rating"), rank=2, reg_param=0.1, alpha=1.0, signal="ratings")
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_als(train_df.where("label = 2"), rank=2, reg_param=0.1, alpha=1.0)
