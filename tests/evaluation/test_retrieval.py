"""Tests for recsys_kedro.evaluation.retrieval.

Expected values come from hand computations (in comments) or from a brute-force per-user
Python reference written here, independent of the vectorised implementation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys_kedro.evaluation.retrieval import (
    auc,
    embedding_score_fn,
    full_catalogue_topk_metrics,
    paired_bootstrap_interval,
    popularity_score_fn,
    topk_items,
)

# --------------------------------------------------------------------------------------
# brute-force reference
# --------------------------------------------------------------------------------------


def reference_metrics(scores, test_pairs, exclude_pairs, ks):
    """Per-user loop over a dense score matrix; ranking = sort by (-score, item)."""
    n_users, n_items = scores.shape
    relevant = {u: set() for u in range(n_users)}
    excluded = {u: set() for u in range(n_users)}
    for u, i in test_pairs:
        relevant[int(u)].add(int(i))
    for u, i in exclude_pairs:
        excluded[int(u)].add(int(i))
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg")}
    n_eval = 0
    for u in range(n_users):
        rel = relevant[u] - excluded[u]
        if not rel:
            continue
        n_eval += 1
        row = [-math.inf if i in excluded[u] else float(scores[u, i]) for i in range(n_items)]
        ranking = sorted(range(n_items), key=lambda i, row=row: (-row[i], i))
        for k in ks:
            top = ranking[:k]
            hits = [rank for rank, item in enumerate(top, start=1) if item in rel]
            dcg = sum(1.0 / math.log2(rank + 1) for rank in hits)
            idcg = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(rel), k) + 1))
            sums[f"recall@{k}"] += len(hits) / len(rel)
            sums[f"ndcg@{k}"] += dcg / idcg
    return {key: value / n_eval for key, value in sums.items()}, n_eval


def matrix_score_fn(scores):
    return lambda users: scores[users]


def random_problem(seed, n_users=17, n_items=23, n_test=60, n_excl=80, integer_scores=False):
    rng = np.random.default_rng(seed)
    if integer_scores:  # many ties
        scores = rng.integers(0, 4, size=(n_users, n_items)).astype(np.float32)
    else:
        scores = rng.standard_normal((n_users, n_items)).astype(np.float32)
    test_u = rng.integers(0, n_users, n_test)
    test_i = rng.integers(0, n_items, n_test)
    excl_u = rng.integers(0, n_users, n_excl)
    excl_i = rng.integers(0, n_items, n_excl)
    # make some test pairs also excluded, so that rule is exercised
    excl_u = np.concatenate([excl_u, test_u[:10]])
    excl_i = np.concatenate([excl_i, test_i[:10]])
    return scores, test_u, test_i, excl_u, excl_i


# --------------------------------------------------------------------------------------
# hand-worked example
# --------------------------------------------------------------------------------------

# 3 users x 6 items.
HAND_SCORES = np.array(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # user 0
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # user 1
        [0.5, 0.5, 0.9, 0.1, 0.5, 0.2],  # user 2 (ties among items 0, 1, 4)
    ],
    dtype=np.float32,
)
# test positives: user 0 -> {1, 4}; user 1 -> {0, 5}; user 2 -> {1, 3}
HAND_TEST = (np.array([0, 0, 1, 1, 2, 2]), np.array([1, 4, 5, 0, 1, 3]))
# excluded (training) pairs: user 0 -> {0}; user 1 -> {5} (also a test positive!)
HAND_EXCL = (np.array([0, 1]), np.array([0, 5]))

# Rankings after masking (ties by lower item index):
#   user 0: 1 2 3 4 5 | 0(-inf)   relevant {1, 4}  -> hits at ranks 1 and 4
#   user 1: 4 3 2 1 0 | 5(-inf)   relevant {0} (5 is excluded, so not relevant) -> rank 5
#   user 2: 2 0 1 4 5 3           relevant {1, 3}  -> hits at ranks 3 and 6
# IDCG with 1 hit = 1; with 2 hits = 1 + 1/log2(3).
_IDCG2 = 1 + 1 / math.log2(3)
HAND_EXPECTED = {
    # recall@1: u0 1/2, u1 0, u2 0
    "recall@1": (0.5 + 0 + 0) / 3,
    # ndcg@1: u0 1/1, others 0
    "ndcg@1": (1.0 + 0 + 0) / 3,
    # recall@2: u0 1/2 (items 1, 2), u1 0 (4, 3), u2 0 (2, 0; item 1 loses the tie to 0)
    "recall@2": (0.5 + 0 + 0) / 3,
    # ndcg@2: u0 DCG 1, IDCG = 1 + 1/log2(3)
    "ndcg@2": (1 / _IDCG2 + 0 + 0) / 3,
    # recall@3: u0 1/2, u1 0, u2 1/2 (item 1 at rank 3)
    "recall@3": (0.5 + 0 + 0.5) / 3,
    # ndcg@3: u0 1/IDCG2; u2 DCG = 1/log2(4) = 0.5, IDCG2
    "ndcg@3": (1 / _IDCG2 + 0 + 0.5 / _IDCG2) / 3,
    # K = 10 > 6 items: every relevant item is in the list
    "recall@10": (1.0 + 1.0 + 1.0) / 3,
    # u0: (1 + 1/log2(5)) / IDCG2; u1: 1/log2(6) / 1; u2: (1/log2(4) + 1/log2(7)) / IDCG2
    "ndcg@10": (
        (1 + 1 / math.log2(5)) / _IDCG2 + 1 / math.log2(6) + (0.5 + 1 / math.log2(7)) / _IDCG2
    )
    / 3,
}


@pytest.mark.parametrize("batch_size", [1, 2, 3, 1024])
def test_hand_worked_example(batch_size):
    result = full_catalogue_topk_metrics(
        matrix_score_fn(HAND_SCORES),
        6,
        *HAND_TEST,
        *HAND_EXCL,
        ks=(1, 2, 3, 10),
        batch_size=batch_size,
    )
    assert result["n_eval_users"] == 3
    assert set(result) == set(HAND_EXPECTED) | {"n_eval_users"}
    for key, value in HAND_EXPECTED.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    # the reference agrees with the hand computation too
    ref, n_eval = reference_metrics(
        HAND_SCORES, zip(*HAND_TEST, strict=True), zip(*HAND_EXCL, strict=True), (1, 2, 3, 10)
    )
    assert n_eval == 3
    for key, value in HAND_EXPECTED.items():
        assert ref[key] == pytest.approx(value, abs=1e-12), key


def test_hand_example_topk_items():
    top = topk_items(matrix_score_fn(HAND_SCORES), 6, np.array([2, 0, 1, 0]), 4, *HAND_EXCL)
    np.testing.assert_array_equal(top, [[2, 0, 1, 4], [1, 2, 3, 4], [4, 3, 2, 1], [1, 2, 3, 4]])


def test_result_keys_in_order_and_types():
    result = full_catalogue_topk_metrics(
        matrix_score_fn(HAND_SCORES), 6, *HAND_TEST, *HAND_EXCL, ks=(3, 1, 3)
    )
    assert list(result) == ["recall@3", "ndcg@3", "recall@1", "ndcg@1", "n_eval_users"]
    assert isinstance(result["n_eval_users"], int)
    assert all(isinstance(v, float) for k, v in result.items() if k != "n_eval_users")


def test_user_whose_positives_are_all_excluded_is_not_evaluated():
    # user 3 has test positive 2 only, and it is excluded -> not an evaluable user
    scores = np.vstack([HAND_SCORES, np.ones((1, 6), np.float32)])
    test = (np.append(HAND_TEST[0], 3), np.append(HAND_TEST[1], 2))
    excl = (np.append(HAND_EXCL[0], 3), np.append(HAND_EXCL[1], 2))
    result = full_catalogue_topk_metrics(matrix_score_fn(scores), 6, *test, *excl, ks=(1, 3))
    assert result["n_eval_users"] == 3
    assert result["recall@3"] == pytest.approx(HAND_EXPECTED["recall@3"])


def test_duplicate_test_pairs_count_once():
    test = (np.concatenate([HAND_TEST[0], [0, 0]]), np.concatenate([HAND_TEST[1], [1, 4]]))
    result = full_catalogue_topk_metrics(
        matrix_score_fn(HAND_SCORES), 6, *test, *HAND_EXCL, ks=(3,)
    )
    assert result["recall@3"] == pytest.approx(HAND_EXPECTED["recall@3"])
    assert result["ndcg@3"] == pytest.approx(HAND_EXPECTED["ndcg@3"])


# --------------------------------------------------------------------------------------
# random data against the brute-force reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("integer_scores", [False, True], ids=["continuous", "ties"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_matches_reference(seed, integer_scores):
    scores, test_u, test_i, excl_u, excl_i = random_problem(seed, integer_scores=integer_scores)
    ks = (1, 5, 10, 30)  # 30 > n_items = 23
    ref, n_eval = reference_metrics(
        scores,
        zip(test_u, test_i, strict=True),
        zip(excl_u, excl_i, strict=True),
        ks,
    )
    for batch_size in (1, 3, scores.shape[0], 10_000):
        result = full_catalogue_topk_metrics(
            matrix_score_fn(scores),
            scores.shape[1],
            test_u,
            test_i,
            excl_u,
            excl_i,
            ks=ks,
            batch_size=batch_size,
        )
        assert result["n_eval_users"] == n_eval
        for key, value in ref.items():
            assert result[key] == pytest.approx(value, rel=1e-12, abs=1e-12), (batch_size, key)


def test_torch_scores_and_no_exclusions_match_reference():
    scores, test_u, test_i, _, _ = random_problem(5, n_users=40, n_items=50, n_test=200)
    scores_t = torch.from_numpy(scores)
    ks = (3, 7)
    ref, n_eval = reference_metrics(scores, zip(test_u, test_i, strict=True), [], ks)
    result = full_catalogue_topk_metrics(
        lambda users: scores_t[torch.from_numpy(users)],
        50,
        test_u,
        test_i,
        np.array([], dtype=np.int64),
        np.array([]),
        ks=ks,
        batch_size=7,
    )
    assert result["n_eval_users"] == n_eval
    for key, value in ref.items():
        assert result[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_score_fn_gets_sorted_distinct_users_in_bounded_chunks():
    scores, test_u, test_i, excl_u, excl_i = random_problem(3)
    calls = []

    def spy(users):
        calls.append(users.copy())
        return scores[users]

    full_catalogue_topk_metrics(
        spy, scores.shape[1], test_u, test_i, excl_u, excl_i, ks=(5,), batch_size=4
    )
    assert all(1 <= len(c) <= 4 for c in calls)
    seen = np.concatenate(calls)
    assert np.all(np.diff(seen) > 0)  # sorted and each user once
    assert all(c.dtype == np.int64 for c in calls)


def test_input_scores_not_modified():
    scores, test_u, test_i, excl_u, excl_i = random_problem(4)
    before = scores.copy()
    full_catalogue_topk_metrics(
        matrix_score_fn(scores), scores.shape[1], test_u, test_i, excl_u, excl_i, ks=(5,)
    )
    scores_t = torch.from_numpy(scores)
    topk_items(
        lambda u: scores_t[torch.from_numpy(u)], scores.shape[1], np.arange(17), 5, excl_u, excl_i
    )
    np.testing.assert_array_equal(scores, before)


# --------------------------------------------------------------------------------------
# exclusion
# --------------------------------------------------------------------------------------


def test_excluded_items_never_in_topk_even_with_top_scores():
    rng = np.random.default_rng(7)
    n_users, n_items, k = 12, 30, 10
    excl_u = np.repeat(np.arange(n_users), 5)
    excl_i = np.concatenate([rng.choice(n_items, 5, replace=False) for _ in range(n_users)])
    scores = rng.random((n_users, n_items)).astype(np.float32)
    scores[excl_u, excl_i] = 100.0  # without masking, these would be the top 5
    top = topk_items(
        matrix_score_fn(scores), n_items, np.arange(n_users), k, excl_u, excl_i, batch_size=5
    )
    assert top.shape == (n_users, k)
    for u in range(n_users):
        excluded = set(excl_i[excl_u == u])
        assert not excluded & set(top[u].tolist())
        assert len(set(top[u].tolist())) == k
        # the remaining items in descending score order
        allowed = [i for i in range(n_items) if i not in excluded]
        expected = sorted(allowed, key=lambda i, u=u: (-scores[u, i], i))[:k]
        assert top[u].tolist() == expected


def test_perfect_scorer_reaches_one_despite_high_scoring_excluded_items():
    rng = np.random.default_rng(11)
    n_users, n_items = 20, 40
    test_u, test_i, excl_u, excl_i = [], [], [], []
    for u in range(n_users):
        items = rng.choice(n_items, 8, replace=False)
        n_rel = rng.integers(1, 4)
        test_u += [u] * n_rel
        test_i += items[:n_rel].tolist()
        excl_u += [u] * 5
        excl_i += items[3:8].tolist()
    test_u, test_i, excl_u, excl_i = map(np.array, (test_u, test_i, excl_u, excl_i))
    scores = np.zeros((n_users, n_items), np.float32)
    scores[excl_u, excl_i] = 2.0  # would take the top slots if not masked
    scores[test_u, test_i] = 1.0
    result = full_catalogue_topk_metrics(
        matrix_score_fn(scores), n_items, test_u, test_i, excl_u, excl_i, ks=(3, 5), batch_size=6
    )
    assert result == {
        "recall@3": 1.0,
        "ndcg@3": 1.0,
        "recall@5": 1.0,
        "ndcg@5": 1.0,
        "n_eval_users": n_users,
    }
    # and without the exclusions, the excluded items crowd out the relevant ones
    empty = np.array([], dtype=np.int64)
    unmasked = full_catalogue_topk_metrics(
        matrix_score_fn(scores), n_items, test_u, test_i, empty, empty, ks=(3,)
    )
    assert unmasked["recall@3"] == 0.0


def test_all_items_excluded_but_relevant_ones_still_ranked():
    # user 0 has every item but item 2 excluded: item 2 must be ranked first whatever its score
    scores = np.array([[5.0, 4.0, -1e30, 3.0]], np.float32)  # any finite score beats -inf
    result = full_catalogue_topk_metrics(
        matrix_score_fn(scores),
        4,
        np.array([0]),
        np.array([2]),
        np.array([0, 0, 0]),
        np.array([0, 1, 3]),
        ks=(1,),
    )
    assert result["recall@1"] == 1.0
    assert result["ndcg@1"] == 1.0


# --------------------------------------------------------------------------------------
# scorers
# --------------------------------------------------------------------------------------


def test_popularity_score_fn_ranks_by_count():
    train_items = np.array([3, 1, 3, 3, 0, 1, 4, 4])  # counts: 0:1 1:2 2:0 3:3 4:2 5:0
    fn = popularity_score_fn(train_items, 6)
    scores = np.asarray(fn(np.array([0, 5, 9])))
    assert scores.shape == (3, 6)
    np.testing.assert_array_equal(scores, [[1, 2, 0, 3, 2, 0]] * 3)
    top = topk_items(fn, 6, np.array([0]), 6)
    np.testing.assert_array_equal(top, [[3, 1, 4, 0, 2, 5]])  # ties (1, 4), (2, 5) by index


def test_popularity_baseline_metrics_by_hand():
    # counts: item 3: 3, item 1: 2, item 4: 2, item 0: 1 -> ranking 3 1 4 0 2 5
    fn = popularity_score_fn(np.array([3, 1, 3, 3, 0, 1, 4, 4]), 6)
    # user 0 trained on item 3 (excluded) -> ranking 1 4 0 2 5; relevant {0}: rank 3
    # user 1 no training; relevant {3, 5}: ranks 1 and 6
    result = full_catalogue_topk_metrics(
        fn, 6, np.array([0, 1, 1]), np.array([0, 3, 5]), np.array([0]), np.array([3]), ks=(2, 3)
    )
    assert result["recall@2"] == pytest.approx((0 + 0.5) / 2)
    assert result["recall@3"] == pytest.approx((1 + 0.5) / 2)
    assert result["ndcg@2"] == pytest.approx((0 + 1 / (1 + 1 / math.log2(3))) / 2)
    assert result["ndcg@3"] == pytest.approx((1 / math.log2(4) + 1 / (1 + 1 / math.log2(3))) / 2)


def test_popularity_score_fn_validation():
    with pytest.raises(ValueError, match="train_items"):
        popularity_score_fn(np.array([0, 6]), 6)
    with pytest.raises(ValueError, match="n_items"):
        popularity_score_fn(np.array([0]), 0)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_embedding_score_fn_is_dot_product(as_tensor):
    rng = np.random.default_rng(0)
    user_emb = rng.standard_normal((9, 4)).astype(np.float32)
    item_emb = rng.standard_normal((13, 4)).astype(np.float32)
    args = (
        (torch.from_numpy(user_emb), torch.from_numpy(item_emb))
        if as_tensor
        else (user_emb, item_emb)
    )
    fn = embedding_score_fn(*args)
    users = np.array([8, 0, 3])
    got = np.asarray(fn(users))
    expected = np.array(
        [
            [
                sum(float(user_emb[u, d]) * float(item_emb[i, d]) for d in range(4))
                for i in range(13)
            ]
            for u in users
        ]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, user_emb[users] @ item_emb.T, rtol=1e-6, atol=1e-6)


def test_embedding_score_fn_with_metrics_and_grad_tensors():
    rng = np.random.default_rng(1)
    user_emb = torch.randn(15, 6, requires_grad=True)
    item_emb = torch.randn(25, 6, requires_grad=True)
    test_u, test_i = rng.integers(0, 15, 50), rng.integers(0, 25, 50)
    excl_u, excl_i = rng.integers(0, 15, 40), rng.integers(0, 25, 40)
    result = full_catalogue_topk_metrics(
        embedding_score_fn(user_emb, item_emb),
        25,
        test_u,
        test_i,
        excl_u,
        excl_i,
        ks=(5, 10),
        batch_size=4,
    )
    dense = (user_emb @ item_emb.T).detach().numpy()
    ref, n_eval = reference_metrics(
        dense, zip(test_u, test_i, strict=True), zip(excl_u, excl_i, strict=True), (5, 10)
    )
    assert result["n_eval_users"] == n_eval
    for key, value in ref.items():
        assert result[key] == pytest.approx(value, abs=1e-9), key


def test_embedding_score_fn_validation():
    with pytest.raises(ValueError, match="dimensions differ"):
        embedding_score_fn(np.zeros((3, 4)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="2-D"):
        embedding_score_fn(np.zeros(3), np.zeros((5, 3)))
    fn = embedding_score_fn(np.zeros((3, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        fn(np.array([3]))


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------

_EMPTY = np.array([], dtype=np.int64)


def _call(**overrides):
    kwargs = {
        "score_fn": matrix_score_fn(HAND_SCORES),
        "n_items": 6,
        "test_users": HAND_TEST[0],
        "test_items": HAND_TEST[1],
        "exclude_users": HAND_EXCL[0],
        "exclude_items": HAND_EXCL[1],
        "ks": (1, 3),
        "batch_size": 2,
    }
    kwargs.update(overrides)
    return full_catalogue_topk_metrics(**kwargs)


def test_call_helper_is_valid():
    assert _call()["n_eval_users"] == 3


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"test_users": np.array([0, 1])}, "same length"),
        ({"exclude_items": np.array([0])}, "same length"),
        ({"test_items": np.array([1, 4, 5, 0, 1, 6])}, r"test_items must lie in \[0, n_items=6\)"),
        ({"test_items": np.array([1, 4, 5, 0, 1, -1])}, "test_items must lie"),
        ({"exclude_items": np.array([0, 7])}, "exclude_items must lie"),
        ({"test_users": np.array([0, 0, 1, 1, 2, -2])}, "negative user"),
        ({"test_items": np.array([1.0, 4, 5, 0, 1, 3])}, "integer"),
        ({"test_users": np.zeros((2, 3), np.int64)}, "1-D"),
        ({"ks": (10, 0)}, "K in ks must be >= 1"),
        ({"ks": ()}, "at least one"),
        ({"ks": (2.5,)}, "integers"),
        ({"batch_size": 0}, "batch_size"),
        ({"n_items": 0}, "n_items"),
        ({"score_fn": lambda users: HAND_SCORES[users][:, :5]}, "shape"),
        ({"score_fn": lambda users: np.full((len(users), 6), np.nan)}, "NaN"),
    ],
)
def test_validation_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        _call(**overrides)


def test_no_positive_test_pairs_error_explains_fix():
    with pytest.raises(ValueError, match="no positive interactions") as info:
        _call(test_users=_EMPTY, test_items=np.array([]))
    assert "label threshold" in str(info.value)
    assert "split" in str(info.value)


def test_all_test_pairs_excluded_error():
    with pytest.raises(ValueError, match="also excluded") as info:
        _call(exclude_users=HAND_TEST[0], exclude_items=HAND_TEST[1])
    assert "label threshold" in str(info.value)


def test_topk_items_validation():
    fn = matrix_score_fn(HAND_SCORES)
    with pytest.raises(ValueError, match="k must be >= 1"):
        topk_items(fn, 6, np.array([0]), 0)
    with pytest.raises(ValueError, match="negative"):
        topk_items(fn, 6, np.array([-1]), 2)
    assert topk_items(fn, 6, np.array([0]), 10).shape == (1, 6)  # capped at n_items


# --------------------------------------------------------------------------------------
# auc
# --------------------------------------------------------------------------------------


def test_auc_hand_example():
    # positives score 0.8, 0.4; negatives 0.5, 0.1, 0.4
    # pairs (pos, neg): (0.8 > all 3) -> 3; (0.4 > 0.1) -> 1, (0.4 = 0.4) -> 0.5, (0.4 < 0.5) -> 0
    # AUC = (3 + 1.5) / (2 * 3) = 0.75
    labels = np.array([1, 0, 0, 1, 0])
    scores = np.array([0.8, 0.5, 0.1, 0.4, 0.4])
    assert auc(labels, scores) == pytest.approx(0.75)
    assert auc(labels.astype(bool), scores) == pytest.approx(0.75)
    assert auc(labels, -scores) == pytest.approx(0.25)
    assert isinstance(auc(labels, scores), float)


def test_auc_errors():
    with pytest.raises(ValueError, match="only one class"):
        auc(np.array([1, 1, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="same length"):
        auc(np.array([1, 0]), np.array([0.1]))
    with pytest.raises(ValueError, match="binary"):
        auc(np.array([1, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="at least one"):
        auc(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        auc(np.array([1, 0]), np.array([np.nan, 0.2]))


def test_embedding_matrix_orders_rows_by_index_and_refuses_gaps():
    import pandas as pd

    from recsys_kedro.evaluation.retrieval import embedding_matrix

    frame = pd.DataFrame({"item_idx": [2, 0, 1], "embedding": [[2.0, 2.0], [0.0, 0.0], [1.0, 1.0]]})
    np.testing.assert_array_equal(embedding_matrix(frame, "item_idx")[:, 0], [0.0, 1.0, 2.0])
    assert embedding_matrix(frame, "item_idx").dtype == np.float32
    with pytest.raises(ValueError, match="not contiguous"):
        embedding_matrix(frame.iloc[:2], "item_idx")


def test_per_user_values_average_to_the_reported_metrics():
    rng = np.random.default_rng(5)
    users, items = rng.normal(size=(30, 4)), rng.normal(size=(50, 4))
    test_u, test_i = rng.integers(0, 30, 80), rng.integers(0, 50, 80)
    excl_u, excl_i = rng.integers(0, 30, 100), rng.integers(0, 50, 100)
    args = (embedding_score_fn(users, items), 50, test_u, test_i, excl_u, excl_i, [5, 20])
    result = full_catalogue_topk_metrics(*args, batch_size=7, per_user=True)
    per_user = result["per_user"]
    assert per_user["users"].size == result["n_eval_users"]
    assert (np.diff(per_user["users"]) > 0).all()  # sorted, so two scorers line up
    for key in ("recall@5", "ndcg@5", "recall@20", "ndcg@20"):
        assert per_user[key].mean() == pytest.approx(result[key], abs=1e-12), key
    assert "per_user" not in full_catalogue_topk_metrics(*args)


def test_paired_bootstrap_interval_is_about_the_difference():
    rng = np.random.default_rng(0)
    base = rng.random(400)
    assert paired_bootstrap_interval(base, base) == (0.0, 0.0)
    low, high = paired_bootstrap_interval(base + 0.05 + rng.normal(0, 0.01, 400), base)
    assert 0.04 < low < 0.05 < high < 0.06  # the shared part cancels: a narrow interval
    low, high = paired_bootstrap_interval(rng.random(400), rng.random(400))
    assert low < 0 < high  # two draws of the same thing: no difference supported
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap_interval(base, base[:10])
