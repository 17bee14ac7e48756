"""Recall@K / NDCG@K of ranked candidate lists (a retrieval stage's top N, re-ordered).

A funnel scores only each user's candidates, never the full catalogue, so its metrics are
computed on lists: rows ``(user, item, score)``, one list per user. The conventions are
those of :mod:`recsys_kedro.evaluation.retrieval`, so a list metric at K equals the
full-catalogue metric whenever the list holds the full-catalogue top K:

* **Relevant items** of a user are the distinct items of its relevant pairs, wherever they
  are (inside the list or not): an item the retrieval stage missed still counts in the
  denominator of Recall@K and in IDCG@K.
* **Ties** are broken by item index: the ranking is the sort of ``(-score, item)``.
* **Users**: the metrics average over the users with at least one relevant item; a user
  with relevant items but no list scores 0 (the funnel recommended nothing to it).

Everything is vectorised with numpy (one sort of all the rows), no per-user Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["list_metrics", "rank_lists"]


def _int_array(values: object, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer indexes, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def rank_lists(users: object, items: object, scores: object) -> np.ndarray:
    """1-based rank of every row inside its user's list (by ``-score``, then item index).

    Shapes: ``users``, ``items``, ``scores`` ``(R,)``; returns ``(R,)`` int64.
    """
    users_arr = _int_array(users, "users")
    items_arr = _int_array(items, "items")
    scores_arr = np.asarray(scores, dtype=np.float64)
    if not (users_arr.shape == items_arr.shape == scores_arr.shape):
        raise ValueError(
            f"users, items and scores must have one length, got {users_arr.shape}, "
            f"{items_arr.shape}, {scores_arr.shape}"
        )
    if np.isnan(scores_arr).any():
        raise ValueError("scores contain NaN: a model produced an undefined score")
    order = np.lexsort((items_arr, -scores_arr, users_arr))
    sorted_users = users_arr[order]
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
    counts = np.diff(np.r_[starts, sorted_users.size])
    position = np.arange(sorted_users.size) - np.repeat(starts, counts)
    ranks = np.empty_like(position)
    ranks[order] = position + 1
    return ranks


def list_metrics(
    users: object,
    items: object,
    scores: object,
    relevant_users: object,
    relevant_items: object,
    ks: Sequence[int],
    per_user: bool = False,
) -> dict[str, Any]:
    """``recall@K`` and ``ndcg@K`` for every K, and ``n_users`` (users averaged over).

    Args:
        users, items, scores: the candidate lists, one row per ``(user, item)``; a pair
            listed twice is an error (a list holds an item once).
        relevant_users, relevant_items: the relevant pairs (e.g. test positives).
        ks: cut-offs ``K >= 1``.
        per_user: also return ``"per_user": {"users": (n,) int64, "recall@K": (n,), ...}``,
            every evaluated user's values, users sorted (for paired intervals: two scorings
            of the same relevant pairs line up).

    Raises:
        ValueError: no user has a relevant item, or a bad input (names it).
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be cut-offs K >= 1, got {ks}")
    users_arr = _int_array(users, "users")
    items_arr = _int_array(items, "items")
    ranks = rank_lists(users_arr, items_arr, scores)
    pairs = np.stack([users_arr, items_arr], axis=1)
    if pairs.size and np.unique(pairs, axis=0).shape[0] != pairs.shape[0]:
        raise ValueError("a (user, item) pair is listed twice in the candidate lists")
    rel = np.unique(
        np.stack(
            [
                _int_array(relevant_users, "relevant_users"),
                _int_array(relevant_items, "relevant_items"),
            ],
            axis=1,
        ),
        axis=0,
    )
    if rel.size == 0:
        raise ValueError(
            "no relevant pair: the split to evaluate on has no positive interaction "
            "(enlarge it or lower the label threshold)"
        )
    eval_users, n_relevant = np.unique(rel[:, 0], return_counts=True)
    # Hits: listed pairs that are relevant (a merge on the pair keys).
    width = int(max(items_arr.max(initial=0), rel[:, 1].max()) + 1)
    listed_keys = users_arr * width + items_arr
    hit = np.isin(listed_keys, rel[:, 0] * width + rel[:, 1])
    hit_users, hit_ranks = users_arr[hit], ranks[hit]
    slot = np.searchsorted(eval_users, hit_users)  # every hit user is an eval user
    out: dict[str, Any] = {"n_users": float(eval_users.size)}
    rows: dict[str, np.ndarray] = {"users": eval_users}
    for k in ks:
        within = hit_ranks <= k
        hits = np.bincount(slot[within], minlength=eval_users.size)
        gains = np.bincount(
            slot[within], weights=1.0 / np.log2(hit_ranks[within] + 1.0), minlength=eval_users.size
        )
        ideal_cum = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
        idcg = ideal_cum[np.minimum(n_relevant, k) - 1]
        rows[f"recall@{k}"], rows[f"ndcg@{k}"] = hits / n_relevant, gains / idcg
        out[f"recall@{k}"] = float(np.mean(rows[f"recall@{k}"]))
        out[f"ndcg@{k}"] = float(np.mean(rows[f"ndcg@{k}"]))
    if per_user:
        out["per_user"] = rows
    return out
