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
    ALSGrid,
    factor_matrices,
    fit_als,
    grid_search_als,
    preferences,
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


def test_grid_search_keeps_the_best_validation_point(planted):
    train_df, train, held_out = planted
    grid = ALSGrid(rank=(1, 4), reg_param=(0.1,), alpha=(10.0,))
    result = grid_search_als(
        train_df,
        held_out["user_idx"].to_numpy(),
        held_out["item_idx"].to_numpy(),
        N_USERS,
        N_ITEMS,
        grid,
        select_by=f"ndcg@{K}",
        ks=[1, 5],
        **FAST,
    )
    table = result.table
    assert table[["rank", "reg_param", "alpha"]].to_dict("records") == grid.points()
    for col in ("recall@1", "ndcg@1", "recall@5", "ndcg@5", f"ndcg@{K}", "n_eval_users", "fit_s"):
        assert col in table.columns, col
    best = table.iloc[int(table[f"ndcg@{K}"].to_numpy().argmax())]
    assert result.params == {
        "rank": int(best["rank"]),
        "reg_param": best["reg_param"],
        "alpha": best["alpha"],
    }
    assert result.select_by == f"ndcg@{K}"
    assert result.user_factors.shape == (N_USERS, result.params["rank"])
    # the kept factors are the chosen point's: they reproduce its validation score
    again = _metrics(embedding_score_fn(result.user_factors, result.item_factors), train, held_out)
    assert again[f"ndcg@{K}"] == pytest.approx(best[f"ndcg@{K}"])


def test_preferences_of_each_signal(planted):
    train_df, train, _ = planted
    positives = preferences(train_df, "positives").toPandas()
    assert len(positives) == int(train["label"].sum())
    assert set(positives["preference"]) == {1.0}
    ratings = preferences(train_df, "ratings").toPandas()
    assert len(ratings) == len(train)
    assert sorted(set(ratings["preference"])) == [1.0, 5.0]


@pytest.mark.parametrize(
    ("grid", "match"),
    [
        ({"rank": [], "reg_param": [0.1], "alpha": [1.0]}, "rank list is empty"),
        ({"rank": [0, 8], "reg_param": [0.1], "alpha": [1.0]}, "rank must be >= 1"),
        ({"rank": [8], "reg_param": [-0.1], "alpha": [1.0]}, "reg_param must be >= 0"),
        ({"rank": [8], "reg_param": [0.1], "alpha": [0.0]}, "alpha must be > 0"),
        ({"rank": [8.5], "reg_param": [0.1], "alpha": [1.0]}, "must hold integers"),
        ({"rank": ["8"], "reg_param": [0.1], "alpha": [1.0]}, "must hold numbers"),
        ({"rank": [8], "reg_param": [0.1]}, r"missing \['alpha'\]"),
        ({"rank": [8], "reg_param": [0.1], "alpha": [1.0], "beta": [1]}, r"unknown \['beta'\]"),
    ],
)
def test_bad_grids_are_rejected(grid, match):
    with pytest.raises(ValueError, match=match):
        ALSGrid.from_mapping(grid)


def test_grid_points_cover_every_combination():
    grid = ALSGrid.from_mapping({"rank": [4, 8, 8], "reg_param": 0.1, "alpha": [1, 10]})
    assert grid.rank == (4, 8) and grid.alpha == (1.0, 10.0)
    assert len(grid.points()) == 4
    assert grid.points()[1] == {"rank": 4, "reg_param": 0.1, "alpha": 10.0}


def test_bad_settings_fail_before_any_fit(planted):
    train_df, _, held_out = planted
    args = (held_out["user_idx"], held_out["item_idx"], N_USERS, N_ITEMS)
    grid = {"rank": [2], "reg_param": [0.1], "alpha": [1.0]}
    with pytest.raises(ValueError, match="select_by"):
        grid_search_als(train_df, *args, grid, select_by="auc@10")
    with pytest.raises(ValueError, match="signal must be one of"):
        grid_search_als(train_df, *args, grid, signal="clicks")
    with pytest.raises(ValueError, match="max_iter"):
        grid_search_als(train_df, *args, grid, max_iter=0)
    with pytest.raises(ValueError, match=r"lack the column\(s\) \['rating'\]"):
        fit_als(train_df.drop("rating"), rank=2, reg_param=0.1, alpha=1.0, signal="ratings")
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_als(train_df.where("label = 2"), rank=2, reg_param=0.1, alpha=1.0)
