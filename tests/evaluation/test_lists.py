"""List metrics agree with the full-catalogue evaluation and its pinned rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys_kedro.evaluation.lists import list_metrics, rank_lists
from recsys_kedro.evaluation.retrieval import full_catalogue_topk_metrics


def test_rank_lists_orders_by_score_then_item_within_each_user():
    users = [1, 0, 1, 0, 1]
    items = [7, 3, 2, 9, 4]
    scores = [0.5, 0.1, 0.5, 0.9, 0.8]
    # user 1: item 4 (0.8), then items 2 and 7 tie at 0.5 -> lower index first
    assert rank_lists(users, items, scores).tolist() == [3, 2, 2, 1, 1]


def test_a_list_holding_the_whole_catalogue_scores_like_the_full_catalogue():
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 25
    scores = rng.integers(0, 6, size=(n_users, n_items)).astype(float)  # many ties
    test_users = rng.integers(0, n_users, 80)
    test_items = rng.integers(0, n_items, 80)
    ks = (1, 5, 10, 40)
    want = full_catalogue_topk_metrics(
        lambda u: scores[u],
        n_items,
        test_users,
        test_items,
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        ks=ks,
    )
    users, items = np.divmod(np.arange(n_users * n_items), n_items)
    got = list_metrics(users, items, scores.ravel(), test_users, test_items, ks)
    for k in ks:
        assert got[f"recall@{k}"] == pytest.approx(want[f"recall@{k}"])
        assert got[f"ndcg@{k}"] == pytest.approx(want[f"ndcg@{k}"])
    assert got["n_users"] == want["n_eval_users"]


def test_relevant_items_outside_the_list_and_users_without_a_list_count():
    # user 0: list [5, 6], relevant {6, 8} (8 was never retrieved); user 1: no list.
    got = list_metrics([0, 0], [5, 6], [0.9, 0.1], [0, 0, 1], [6, 8, 3], ks=[1, 2])
    assert got["n_users"] == 2
    assert got["recall@1"] == 0.0 and got["recall@2"] == pytest.approx(0.5 / 2)
    dcg = 1 / math.log2(3)
    idcg = 1 + 1 / math.log2(3)
    assert got["ndcg@2"] == pytest.approx(dcg / idcg / 2)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="listed twice"):
        list_metrics([0, 0], [1, 1], [0.2, 0.1], [0], [1], ks=[1])
    with pytest.raises(ValueError, match="no relevant pair"):
        list_metrics([0], [1], [0.2], [], [], ks=[1])
    with pytest.raises(ValueError, match="NaN"):
        list_metrics([0], [1], [float("nan")], [0], [1], ks=[1])
    with pytest.raises(ValueError, match="K >= 1"):
        list_metrics([0], [1], [0.2], [0], [1], ks=[0])


def test_per_user_values_line_up_and_average_to_the_metric():
    got = list_metrics(
        [0, 0, 2], [5, 6, 1], [0.9, 0.1, 0.3], [2, 0, 0, 1], [1, 6, 8, 3], [1, 2], per_user=True
    )
    rows = got["per_user"]
    assert rows["users"].tolist() == [0, 1, 2]  # sorted: other scorings of the pairs line up
    assert rows["recall@2"].tolist() == [0.5, 0.0, 1.0]
    for k in (1, 2):
        assert np.mean(rows[f"ndcg@{k}"]) == pytest.approx(got[f"ndcg@{k}"])
        assert np.mean(rows[f"recall@{k}"]) == pytest.approx(got[f"recall@{k}"])
