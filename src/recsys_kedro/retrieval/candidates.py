"""Candidate lists of the funnel's first stage: each user's top N items from an index.

A list is rows ``user_idx, item_idx, retrieval_score, retrieval_rank`` (rank 1 = best),
the user's excluded items (those seen before the period the list is for) never in it.
Nothing here knows about Kedro or Spark.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys_kedro.retrieval.index import search

__all__ = [
    "candidate_lists",
    "exclusions_by_user",
    "label_pairs",
    "score_pairs",
    "split_users",
]


def exclusions_by_user(
    users: np.ndarray, items: np.ndarray, query_users: np.ndarray
) -> list[np.ndarray]:
    """The items of ``(users, items)`` pairs for each of ``query_users``, in that order
    (an empty array for a user with none). One sort, no per-pair Python."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    query_users = np.asarray(query_users, dtype=np.int64)
    starts = np.searchsorted(users, query_users, side="left")
    ends = np.searchsorted(users, query_users, side="right")
    return [items[s:e] for s, e in zip(starts, ends, strict=True)]


def candidate_lists(
    index,
    user_embeddings: np.ndarray,
    query_users: np.ndarray,
    n: int,
    exclude_users: np.ndarray,
    exclude_items: np.ndarray,
) -> pd.DataFrame:
    """Top ``n`` items of each of ``query_users`` by inner product with its embedding.

    Args:
        index: a FAISS index over the item embeddings (:func:`~.index.build_index`).
        user_embeddings: ``(n_users, D)``; row ``u`` is user ``u``'s query embedding.
        query_users: ``(U,)`` distinct user indexes to list for.
        n: list length (a user with fewer than ``n`` unexcluded items gets a shorter list).
        exclude_users, exclude_items: pairs never listed (e.g. the user's train items).

    Returns:
        ``user_idx, item_idx, retrieval_score, retrieval_rank`` sorted by user then rank.
    """
    query_users = np.asarray(query_users, dtype=np.int64)
    if np.unique(query_users).size != query_users.size:
        raise ValueError("query_users lists a user twice: one list per user")
    if query_users.size and (query_users.min() < 0 or query_users.max() >= len(user_embeddings)):
        raise ValueError(
            f"query_users must lie in [0, {len(user_embeddings)}) (the users the retrieval "
            "model knows)"
        )
    exclude = exclusions_by_user(exclude_users, exclude_items, query_users)
    scores, items = search(index, user_embeddings[query_users], int(n), exclude)
    ranks = np.broadcast_to(np.arange(1, scores.shape[1] + 1), scores.shape)
    users = np.broadcast_to(query_users[:, None], scores.shape)
    real = items >= 0  # -1: fewer than n items were left for the user
    return pd.DataFrame(
        {
            "user_idx": users[real].astype(np.int64),
            "item_idx": items[real].astype(np.int64),
            "retrieval_score": scores[real].astype(np.float32),
            "retrieval_rank": ranks[real].astype(np.int32),
        }
    )


def label_pairs(
    users: np.ndarray, items: np.ndarray, positive_users: np.ndarray, positive_items: np.ndarray
) -> np.ndarray:
    """``1`` where ``(users[i], items[i])`` is a positive pair, else ``0`` (int32)."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    positive_users = np.asarray(positive_users, dtype=np.int64)
    positive_items = np.asarray(positive_items, dtype=np.int64)
    width = int(max(items.max(initial=0), positive_items.max(initial=0)) + 1)
    return np.isin(users * width + items, positive_users * width + positive_items).astype(np.int32)


def split_users(users: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded ``fraction`` of the distinct ``users`` (sorted): held out, e.g. to stop
    training on. At least one user is held out and one kept when there are two or more."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    distinct = np.unique(np.asarray(users, dtype=np.int64))
    if distinct.size < 2:
        raise ValueError(f"{distinct.size} user(s) to split: holding users out needs at least two")
    size = min(max(int(round(fraction * distinct.size)), 1), distinct.size - 1)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(distinct, size=size, replace=False))


def score_pairs(
    user_embeddings: np.ndarray,
    item_embeddings: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    chunk_users: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """The retrieval score of given ``(user, item)`` pairs and the item's rank in the user's
    full-catalogue ranking (1 = best; ties to the lower item index, as everywhere).

    Gives logged pairs (e.g. rated pairs) the same retrieval features as candidate lists.
    Exact, chunked over users: ``chunk_users x n_items`` scores at a time.

    Returns:
        ``scores`` float32 ``(R,)`` and ``ranks`` int32 ``(R,)``.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if users.shape != items.shape:
        raise ValueError(f"users and items must have one length, got {users.shape}, {items.shape}")
    item_embeddings = np.asarray(item_embeddings, dtype=np.float32)
    scores = np.empty(users.size, np.float32)
    ranks = np.empty(users.size, np.int32)
    order = np.argsort(users, kind="stable")
    distinct, starts = np.unique(users[order], return_index=True)
    bounds = np.r_[starts, users.size]
    for c in range(0, distinct.size, chunk_users):
        block = distinct[c : c + chunk_users]
        matrix = user_embeddings[block].astype(np.float32) @ item_embeddings.T  # (b, N)
        for j in range(block.size):
            rows = order[bounds[c + j] : bounds[c + j + 1]]
            row = matrix[j]
            own = row[items[rows]]  # (r,)
            higher = (row[None, :] > own[:, None]).sum(axis=1)
            tied_before = (
                (row[None, :] == own[:, None]) & (np.arange(row.size)[None, :] < items[rows, None])
            ).sum(axis=1)
            scores[rows] = own
            ranks[rows] = 1 + higher + tied_before
    return scores, ranks
