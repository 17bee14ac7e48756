"""Candidate lists: exclusions, ranks, labels and the held-out users."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_kedro.retrieval import IndexConfig, build_index
from recsys_kedro.retrieval.candidates import (
    candidate_lists,
    exclusions_by_user,
    label_pairs,
    score_pairs,
    split_users,
)


def _embeddings(seed=0, n_users=12, n_items=30, dim=8):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n_users, dim)).astype(np.float32),
        rng.normal(size=(n_items, dim)).astype(np.float32),
    )


def test_lists_are_each_users_best_unexcluded_items_in_order():
    users, items = _embeddings()
    index = build_index(items, IndexConfig())
    ex_users, ex_items = np.array([0, 0, 3]), np.array([5, 7, 1])
    lists = candidate_lists(index, users, np.array([0, 3, 4]), 6, ex_users, ex_items)
    assert list(lists.columns) == ["user_idx", "item_idx", "retrieval_score", "retrieval_rank"]
    for u in (0, 3, 4):
        scores = items @ users[u]
        excluded = set(ex_items[ex_users == u].tolist())
        want = [i for i in np.argsort(-scores, kind="stable") if i not in excluded][:6]
        got = lists[lists["user_idx"] == u]
        assert got["item_idx"].tolist() == want
        assert got["retrieval_rank"].tolist() == list(range(1, 7))
        np.testing.assert_allclose(got["retrieval_score"], scores[want], rtol=1e-5)


def test_a_user_with_few_items_left_gets_a_shorter_list():
    users, items = _embeddings(n_items=5)
    index = build_index(items, IndexConfig())
    lists = candidate_lists(
        index, users, np.array([2]), 4, np.array([2, 2, 2]), np.array([0, 1, 2])
    )
    assert sorted(lists["item_idx"]) == [3, 4]  # 5 items, 3 excluded


def test_bad_query_users_are_refused():
    users, items = _embeddings()
    index = build_index(items, IndexConfig())
    none = np.zeros(0, np.int64)
    with pytest.raises(ValueError, match="twice"):
        candidate_lists(index, users, np.array([1, 1]), 3, none, none)
    with pytest.raises(ValueError, match=r"\[0, 12\)"):
        candidate_lists(index, users, np.array([12]), 3, none, none)


def test_exclusions_and_labels_match_pairs():
    ex = exclusions_by_user(np.array([3, 1, 3, 2]), np.array([9, 8, 7, 6]), np.array([3, 0, 1]))
    assert [sorted(e.tolist()) for e in ex] == [[7, 9], [], [8]]
    labels = label_pairs(
        np.array([1, 1, 2]), np.array([5, 6, 5]), np.array([1, 2]), np.array([6, 5])
    )
    assert labels.tolist() == [0, 1, 1]


def test_held_out_users_are_a_seeded_share():
    users = np.repeat(np.arange(50), 3)
    held = split_users(users, 0.2, seed=1)
    assert held.size == 10 and np.all(np.isin(held, users))
    assert np.array_equal(held, split_users(users, 0.2, seed=1))
    assert not np.array_equal(held, split_users(users, 0.2, seed=2))
    assert split_users(np.array([4, 9]), 0.01, seed=0).size == 1  # at least one each side
    with pytest.raises(ValueError, match="at least two"):
        split_users(np.array([4]), 0.5, seed=0)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        split_users(users, 1.0, seed=0)


def test_scored_pairs_get_their_rank_in_the_full_catalogue():
    users, items = _embeddings()
    items[7] = items[3]  # a tie: item 3 ranks before item 7
    pair_users = np.array([5, 2, 5, 5, 5])
    pair_items = np.array([0, 11, 3, 7, 29])
    scores, ranks = score_pairs(users, items, pair_users, pair_items, chunk_users=1)
    for u, i, s, r in zip(pair_users, pair_items, scores, ranks, strict=True):
        full = items @ users[u]
        order = sorted(range(len(full)), key=lambda j: (-full[j], j))
        assert r == order.index(i) + 1
        assert s == pytest.approx(full[i], rel=1e-5)
    assert ranks[3] == ranks[2] + 1
