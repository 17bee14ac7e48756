"""Offline evaluation of retrieval models against the full item catalogue.

Every user that has at least one relevant (positive) test item is scored against *all*
``n_items`` items; the user's training items are masked out; Recall@K and NDCG@K are computed
from the top K of what remains and averaged over those users. The work is vectorised with
torch and chunked over users: one chunk holds a ``(batch_size, n_items)`` score matrix plus
a few masks of the same shape, so memory stays bounded however many users there are.

Conventions (the tests pin all of them):

* **Relevant items** of a user are the distinct items of its ``(user, item)`` test pairs
  (duplicate pairs count once), *minus* the user's excluded pairs: an item that is both a
  test positive and excluded (e.g. it also occurs in the training split) can never be
  recommended, so it is not counted as relevant either. A user whose test positives are all
  excluded has no relevant item and is left out of the average, like a user with none.
* **Excluded pairs** get score ``-inf`` before the top-K; they can only appear in a top-K
  list when a user has fewer than K non-excluded items, and then they are never hits.
* **Ties** are broken deterministically by item index: among equal scores the lower item
  index ranks first (the ranking is the sort of ``(-score, item)``), whatever the chunking
  or the device. This matters for scorers with many ties, such as popularity counts.
* **K larger than the catalogue** is allowed: the top-K list is then the whole catalogue;
  IDCG still uses ``min(|relevant|, K)`` ideal hits.
* Scores must not be NaN (a ``ValueError`` says so); ``+inf`` / ``-inf`` are fine.

Recall@K = |top-K ∩ relevant| / |relevant|. NDCG@K uses binary gains:
DCG@K = Σ 1 / log2(rank + 1) over hits at 1-based ranks ≤ K, IDCG@K is the DCG of
``min(|relevant|, K)`` hits at ranks 1, 2, …, and NDCG@K = DCG@K / IDCG@K.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "ScoreFn",
    "auc",
    "embedding_matrix",
    "embedding_score_fn",
    "full_catalogue_topk_metrics",
    "item_score_fn",
    "paired_bootstrap_interval",
    "paired_intervals",
    "popularity_score_fn",
    "topk_items",
]

ScoreFn = Callable[[np.ndarray], "np.ndarray | torch.Tensor"]
"""Maps user indexes, an int64 array of shape ``(B,)``, to scores of shape ``(B, n_items)``."""

_NO_POSITIVES_HINT = (
    "Check that the test split is not empty and keeps positive interactions: enlarge the "
    "test fraction / split sizes, or lower the label threshold that defines a positive "
    "(e.g. the minimum rating), and make sure test pairs are not all also training pairs."
)


# --------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------


def _as_index_array(values: object, name: str) -> np.ndarray:
    """``values`` as a 1-D int64 array; empty arrays of any dtype are accepted."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(f"{name} must hold integer indexes, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _check_pairs(
    users: object, items: object, n_items: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    users_arr = _as_index_array(users, f"{what}_users")
    items_arr = _as_index_array(items, f"{what}_items")
    if users_arr.shape != items_arr.shape:
        raise ValueError(
            f"{what}_users and {what}_items must have the same length, got "
            f"{users_arr.size} and {items_arr.size}"
        )
    if users_arr.size:
        if users_arr.min() < 0:
            raise ValueError(f"{what}_users holds negative user indexes (min {users_arr.min()})")
        lo, hi = items_arr.min(), items_arr.max()
        if lo < 0 or hi >= n_items:
            raise ValueError(
                f"{what}_items must lie in [0, n_items={n_items}), got values in [{lo}, {hi}]"
            )
    return users_arr, items_arr


def _check_n_items(n_items: int) -> int:
    n_items = operator.index(n_items)
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    return n_items


def _check_ks(ks: Sequence[int]) -> list[int]:
    try:
        checked = [operator.index(k) for k in ks]
    except TypeError as err:
        raise ValueError(f"ks must be a sequence of integers, got {ks!r}") from err
    if not checked:
        raise ValueError("ks must hold at least one cut-off K")
    bad = [k for k in checked if k < 1]
    if bad:
        raise ValueError(f"every K in ks must be >= 1, got {bad}")
    return list(dict.fromkeys(checked))  # de-duplicated, order kept


def _check_batch_size(batch_size: int) -> int:
    batch_size = operator.index(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size


def _pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted distinct ``user * n_items + item`` keys (sorted by user, then item)."""
    if users.size and users.max() > (np.iinfo(np.int64).max - n_items) // n_items:
        raise ValueError("user indexes too large to encode (user, item) pairs in int64")
    return np.unique(users * n_items + items)


# --------------------------------------------------------------------------------------
# scoring and top-K, one chunk of users at a time
# --------------------------------------------------------------------------------------


def _chunk_scores(score_fn: ScoreFn, users: np.ndarray, n_items: int) -> torch.Tensor:
    scores = score_fn(users)
    scores = torch.as_tensor(scores)
    if scores.shape != (users.size, n_items):
        raise ValueError(
            f"score_fn must return scores of shape (n_users_in_batch, n_items) = "
            f"({users.size}, {n_items}), got {tuple(scores.shape)}"
        )
    if not scores.is_floating_point():
        scores = scores.to(torch.float64)  # integer scores: need -inf for masking
    if torch.isnan(scores).any():
        raise ValueError("score_fn returned NaN scores; rankings would be undefined")
    return scores.detach()


def _mask_excluded(
    scores: torch.Tensor, users: np.ndarray, excl_users: np.ndarray, excl_items: np.ndarray
) -> torch.Tensor:
    """``scores`` with excluded pairs set to ``-inf`` (a copy; the input is never modified).

    ``users`` must be sorted ascending; ``excl_users`` / ``excl_items`` sorted by user.
    """
    if excl_users.size == 0:
        return scores
    lo = np.searchsorted(excl_users, users[0], side="left")
    hi = np.searchsorted(excl_users, users[-1], side="right")
    cand_users, cand_items = excl_users[lo:hi], excl_items[lo:hi]
    rows = np.searchsorted(users, cand_users)
    keep = users[np.minimum(rows, users.size - 1)] == cand_users
    if not keep.any():
        return scores
    rows_t = torch.as_tensor(rows[keep], device=scores.device)
    cols_t = torch.as_tensor(cand_items[keep], device=scores.device)
    masked = scores.clone()
    masked[rows_t, cols_t] = float("-inf")
    return masked


def _topk_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indexes ``(B, k)`` of the top ``k`` columns per row, ties broken by lower index.

    Equivalent to a stable descending sort of each row cut at ``k``, without sorting the
    whole row: ``torch.topk`` finds the k-th largest value (its own tie order is not
    specified), all columns above it are taken, plus the lowest-indexed columns equal to
    it; the k selected columns are then stably sorted by score.
    """
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    threshold = torch.topk(scores, k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
    above = scores > threshold
    equal = scores == threshold
    needed = k - above.sum(dim=1, keepdim=True)
    selected = above | (equal & (equal.cumsum(dim=1) <= needed))
    # nonzero() is row-major: each row's k selected columns come out in increasing index.
    columns = selected.nonzero()[:, 1].reshape(n_rows, k)
    order = torch.sort(scores.gather(1, columns), dim=1, descending=True, stable=True).indices
    return columns.gather(1, order)


def _sorted_exclusions(
    exclude_users: object, exclude_items: object, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    users, items = _check_pairs(exclude_users, exclude_items, n_items, "exclude")
    keys = _pair_keys(users, items, n_items)
    return keys // n_items, keys % n_items


def topk_items(
    score_fn: ScoreFn,
    n_items: int,
    users: np.ndarray,
    k: int,
    exclude_users: np.ndarray | None = None,
    exclude_items: np.ndarray | None = None,
    batch_size: int = 1024,
) -> np.ndarray:
    """Top-``k`` item indexes for each of ``users``, shape ``(len(users), min(k, n_items))``.

    Same ranking as :func:`full_catalogue_topk_metrics`: excluded ``(user, item)`` pairs get
    score ``-inf``, ties go to the lower item index, rows are ordered best first. Rows follow
    the order of ``users`` (duplicates allowed).
    """
    n_items = _check_n_items(n_items)
    batch_size = _check_batch_size(batch_size)
    k = operator.index(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    users_arr = _as_index_array(users, "users")
    if users_arr.size and users_arr.min() < 0:
        raise ValueError(f"users holds negative user indexes (min {users_arr.min()})")
    excl_users, excl_items = _sorted_exclusions(
        np.zeros(0, np.int64) if exclude_users is None else exclude_users,
        np.zeros(0, np.int64) if exclude_items is None else exclude_items,
        n_items,
    )
    unique_users, inverse = np.unique(users_arr, return_inverse=True)
    out = np.empty((unique_users.size, min(k, n_items)), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, unique_users.size, batch_size):
            chunk = unique_users[start : start + batch_size]
            scores = _chunk_scores(score_fn, chunk, n_items)
            scores = _mask_excluded(scores, chunk, excl_users, excl_items)
            out[start : start + chunk.size] = _topk_indices(scores, k).cpu().numpy()
    return out[inverse.reshape(-1)]


# --------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------


def full_catalogue_topk_metrics(
    score_fn: ScoreFn,
    n_items: int,
    test_users: np.ndarray,
    test_items: np.ndarray,
    exclude_users: np.ndarray,
    exclude_items: np.ndarray,
    ks: Sequence[int] = (10, 20, 100),
    batch_size: int = 1024,
    per_user: bool = False,
) -> dict[str, Any]:
    """Recall@K and NDCG@K over the full catalogue, averaged over evaluable users.

    Args:
        score_fn: maps an int64 array of user indexes ``(B,)`` (sorted, distinct, at most
            ``batch_size`` of them) to scores ``(B, n_items)``, numpy or torch (any device;
            the top-K runs where the scores are). Higher is better.
        n_items: catalogue size; item indexes lie in ``[0, n_items)``.
        test_users, test_items: the relevant (positive) test pairs, same length.
        exclude_users, exclude_items: pairs masked out before the top-K, usually the
            users' training items; may be empty. A test pair that is also excluded is not
            relevant (see the module docstring).
        ks: cut-offs K >= 1 (duplicates ignored; K may exceed ``n_items``).
        batch_size: users scored per chunk.
        per_user: also return every evaluated user's values (for paired intervals).

    Returns:
        ``{"recall@K": ..., "ndcg@K": ..., ... (for each K in order), "n_eval_users": n}``
        where ``n`` is the number of users with at least one relevant test item; metric
        values are plain floats, ``n_eval_users`` an int. With ``per_user``, also
        ``"per_user": {"users": (n,) int64, "recall@K": (n,), "ndcg@K": (n,), ...}``, the
        users sorted (so two scorers on the same test pairs line up).

    Raises:
        ValueError: on mismatched pair lengths, item indexes outside ``[0, n_items)``,
            negative user indexes, K < 1, ``batch_size`` < 1, a ``score_fn`` that returns
            the wrong shape or NaN, or when no user has a relevant test item.
    """
    n_items = _check_n_items(n_items)
    ks = _check_ks(ks)
    batch_size = _check_batch_size(batch_size)
    t_users, t_items = _check_pairs(test_users, test_items, n_items, "test")
    excl_users, excl_items = _sorted_exclusions(exclude_users, exclude_items, n_items)

    test_keys = _pair_keys(t_users, t_items, n_items)
    n_test_pairs = test_keys.size
    excl_keys = excl_users * n_items + excl_items
    relevant_keys = np.setdiff1d(test_keys, excl_keys, assume_unique=True)  # stays sorted
    if relevant_keys.size == 0:
        detail = (
            "the test split has no positive interactions"
            if n_test_pairs == 0
            else f"all {n_test_pairs} positive test pairs are also excluded (training) pairs"
        )
        raise ValueError(f"No user can be evaluated: {detail}. {_NO_POSITIVES_HINT}")
    rel_users = relevant_keys // n_items
    rel_items = relevant_keys % n_items
    eval_users, n_relevant = np.unique(rel_users, return_counts=True)
    offsets = np.concatenate([[0], np.cumsum(n_relevant)])

    k_max = max(ks)
    k_eff = min(k_max, n_items)  # length of the ranked lists actually produced
    discounts = 1.0 / np.log2(np.arange(2, k_max + 2, dtype=np.float64))
    ideal_dcg = np.cumsum(discounts)  # ideal_dcg[m - 1] = IDCG with m hits

    recall_sum = dict.fromkeys(ks, 0.0)
    ndcg_sum = dict.fromkeys(ks, 0.0)
    rows_out: dict[str, list[np.ndarray]] = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg")}
    with torch.no_grad():
        for start in range(0, eval_users.size, batch_size):
            stop = min(start + batch_size, eval_users.size)
            users = eval_users[start:stop]
            n_rel = n_relevant[start:stop]
            scores = _chunk_scores(score_fn, users, n_items)
            scores = _mask_excluded(scores, users, excl_users, excl_items)
            top = _topk_indices(scores, k_eff)

            relevant = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
            rows = np.repeat(np.arange(users.size), n_rel)
            cols = rel_items[offsets[start] : offsets[stop]]
            relevant[
                torch.as_tensor(rows, device=scores.device),
                torch.as_tensor(cols, device=scores.device),
            ] = True
            hits = relevant.gather(1, top).cpu().numpy().astype(np.float64)  # (B, k_eff)

            hits_cum = np.cumsum(hits, axis=1)
            dcg_cum = np.cumsum(hits * discounts[:k_eff], axis=1)
            for k in ks:
                col = min(k, k_eff) - 1
                recall = hits_cum[:, col] / n_rel
                ndcg = dcg_cum[:, col] / ideal_dcg[np.minimum(n_rel, k) - 1]
                recall_sum[k] += float(np.sum(recall))
                ndcg_sum[k] += float(np.sum(ndcg))
                if per_user:
                    rows_out[f"recall@{k}"].append(recall)
                    rows_out[f"ndcg@{k}"].append(ndcg)

    n_eval = int(eval_users.size)
    result: dict[str, float] = {}
    for k in ks:
        result[f"recall@{k}"] = recall_sum[k] / n_eval
        result[f"ndcg@{k}"] = ndcg_sum[k] / n_eval
    result["n_eval_users"] = n_eval
    if per_user:
        result["per_user"] = {
            "users": eval_users.astype(np.int64),
            **{name: np.concatenate(parts) for name, parts in rows_out.items()},
        }
    return result


def paired_bootstrap_interval(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """A percentile bootstrap interval of ``mean(a - b)`` over paired units (users): the
    same resampled users for both, so what the two have in common cancels out."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"paired values must be 1-D arrays of one length, got {a.shape}, {b.shape}"
        )
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 100):  # bounded memory: 100 resamples at a time
        stop = min(start + 100, n_boot)
        picks = rng.integers(0, diff.size, size=(stop - start, diff.size))
        means[start:stop] = diff[picks].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired_intervals(
    ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], name: str, ks: Sequence[int]
) -> dict[str, list[float]]:
    """``minus_<name>_<metric>@K_ci95``: paired bootstrap 95 % intervals over the evaluated
    users of our metric minus ``name``'s, from two ``per_user`` results (an interval that
    excludes 0 is a difference the users support; one that straddles it is not).

    Raises:
        ValueError: the two were evaluated on other users.
    """
    if not np.array_equal(ours["users"], theirs["users"]):
        raise ValueError(
            f"{name} was evaluated on other users than the model it is compared with: "
            "evaluate both on the same relevant pairs"
        )
    return {
        f"minus_{name}_{m}@{k}_ci95": list(
            paired_bootstrap_interval(ours[f"{m}@{k}"], theirs[f"{m}@{k}"])
        )
        for k in ks
        for m in ("recall", "ndcg")
    }


# --------------------------------------------------------------------------------------
# scorers
# --------------------------------------------------------------------------------------


def embedding_score_fn(
    user_emb: np.ndarray | torch.Tensor, item_emb: np.ndarray | torch.Tensor
) -> Callable[[np.ndarray], torch.Tensor]:
    """Dot-product scorer: ``users -> user_emb[users] @ item_emb.T`` (a torch tensor).

    Embeddings may be numpy arrays or tensors on any device (both on the same one); they
    are detached, and promoted to a common floating dtype.
    """
    users_t = torch.as_tensor(user_emb).detach()
    items_t = torch.as_tensor(item_emb).detach()
    if users_t.ndim != 2 or items_t.ndim != 2:
        raise ValueError(
            f"user_emb and item_emb must be 2-D, got shapes {tuple(users_t.shape)} and "
            f"{tuple(items_t.shape)}"
        )
    if users_t.shape[1] != items_t.shape[1]:
        raise ValueError(
            f"user and item embedding dimensions differ: {users_t.shape[1]} vs {items_t.shape[1]}"
        )
    if users_t.device != items_t.device:
        raise ValueError(f"embeddings on different devices: {users_t.device}, {items_t.device}")
    dtype = torch.promote_types(users_t.dtype, items_t.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    users_t, items_t = users_t.to(dtype), items_t.to(dtype)
    n_users = users_t.shape[0]

    def score(users: np.ndarray) -> torch.Tensor:
        index = torch.as_tensor(np.asarray(users, dtype=np.int64), device=users_t.device)
        if index.numel() and (index.min() < 0 or index.max() >= n_users):
            raise ValueError(f"user indexes must lie in [0, {n_users})")
        return users_t[index] @ items_t.T

    return score


def popularity_score_fn(
    train_items: np.ndarray, n_items: int
) -> Callable[[np.ndarray], torch.Tensor]:
    """Most-popular baseline: every user gets ``score[item] = count of item in train_items``.

    ``train_items`` are the items of the positive training interactions (one entry per
    interaction). Items never seen score 0; ties go to the lower item index in the metrics.
    Scores are float64 (exact counts); the returned rows are a broadcast view, not copies.
    """
    n_items = _check_n_items(n_items)
    items = _as_index_array(train_items, "train_items")
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(
            f"train_items must lie in [0, n_items={n_items}), got values in "
            f"[{items.min()}, {items.max()}]"
        )
    return item_score_fn(np.bincount(items, minlength=n_items).astype(np.float64))


def item_score_fn(scores: np.ndarray) -> Callable[[np.ndarray], torch.Tensor]:
    """Every user gets ``scores[item]`` (float64: counts stay exact, so ties stay ties); the
    returned rows are a broadcast view, not copies."""
    per_item = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    n_items = per_item.shape[0]

    def score(users: np.ndarray) -> torch.Tensor:
        return per_item.unsqueeze(0).expand(len(users), n_items)

    return score


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (``sklearn.metrics.roc_auc_score``).

    Raises:
        ValueError: if lengths differ, inputs are empty, labels are not binary (0/1 or
            bool), scores hold NaN, or only one class is present (AUC is undefined then;
            this raises rather than returning NaN so a broken validation split is noticed).
    """
    from sklearn.metrics import roc_auc_score

    labels_arr = np.asarray(labels).reshape(-1)
    scores_arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels_arr.shape != scores_arr.shape:
        raise ValueError(
            f"labels and scores must have the same length, got {labels_arr.size} and "
            f"{scores_arr.size}"
        )
    if labels_arr.size == 0:
        raise ValueError("auc needs at least one labelled example, got none")
    if not np.isin(labels_arr, [0, 1]).all():
        raise ValueError(f"labels must be binary (0/1), got values {np.unique(labels_arr)[:10]}")
    if np.isnan(scores_arr).any():
        raise ValueError("scores hold NaN")
    present = np.unique(labels_arr)
    if present.size < 2:
        raise ValueError(
            f"AUC is undefined when only one class is present (all labels are "
            f"{int(present[0])}); the evaluation split needs both positives and negatives"
        )
    return float(roc_auc_score(labels_arr.astype(np.int64), scores_arr))


def embedding_matrix(embeddings: Any, idx_col: str) -> np.ndarray:
    """``(n, D)`` float32 rows of a table of ``<idx_col>, embedding`` (one vector per row,
    as the two-tower's embedding datasets hold them), row ``i`` = index ``i``.

    Raises:
        ValueError: the indexes are not exactly ``0 .. n-1``.
    """
    frame = embeddings.sort_values(idx_col)
    if (frame[idx_col].to_numpy() != np.arange(len(frame))).any():
        raise ValueError(f"{idx_col} of the embeddings is not contiguous from 0")
    return np.stack(frame["embedding"].to_numpy()).astype(np.float32)
