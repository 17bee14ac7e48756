"""Full-catalogue Recall@K / NDCG@K computed where the pairs are: in Spark, users by partition.

:func:`recsys_kedro.evaluation.retrieval.full_catalogue_topk_metrics` needs every relevant and
excluded pair of the evaluated users in one process. Here Spark groups them per user (the
relevant items minus the excluded ones, the excluded items), each partition of users is
scored by that same function on the executor (the pinned rules of ``retrieval.py``: relevant
items, ``-inf`` for excluded pairs, ties to the lower item index, K beyond the catalogue), and
the result is one row of metrics per evaluated user, a Spark frame. Nothing but a scorer's
item-side arrays travels from the driver (a broadcast); no split is collected.

A user's metrics depend only on its own scores and pairs, so they equal the one-process
figures; only the averages' summation order differs (last bits of a double).

Scorers are small picklable objects, shipped to the executors with the task:

* :class:`ItemScores`: the same scores for every user (a most-popular baseline);
* :class:`DotProduct`: ``<user vector, item vector>``, the item matrix shipped, the user
  vectors a column of the per-user rows (joined in Spark from a frame of vectors).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recsys_kedro.evaluation.retrieval import (
    ScoreFn,
    _check_ks,
    _check_n_items,
    embedding_score_fn,
    full_catalogue_topk_metrics,
    item_score_fn,
)

__all__ = [
    "DotProduct",
    "ItemScores",
    "collect_per_user",
    "metric_names",
    "pair_scores",
    "summarise",
    "user_topk_metrics",
]

USER, ITEM = "user_idx", "item_idx"
_RELEVANT, _EXCLUDED, _VECTOR = "_relevant", "_excluded", "_vector"


def metric_names(ks: Sequence[int]) -> list[str]:
    """The per-user metric columns, in the order :func:`full_catalogue_topk_metrics` reports
    them: ``recall@K``, ``ndcg@K`` for each K."""
    return [f"{m}@{k}" for k in _check_ks(ks) for m in ("recall", "ndcg")]


@dataclass(frozen=True)
class ItemScores:
    """Every user gets ``scores[item]`` (e.g. popularity counts, float64 for exact ties)."""

    scores: np.ndarray

    needs_vectors = False

    def score_fn(self, users: np.ndarray, vectors: np.ndarray | None) -> ScoreFn:
        return item_score_fn(self.scores)


@dataclass(frozen=True)
class DotProduct:
    """``<user vector, item vector>``: ``items`` is the ``(n_items, D)`` matrix."""

    items: np.ndarray

    needs_vectors = True

    def score_fn(self, users: np.ndarray, vectors: np.ndarray | None) -> ScoreFn:
        assert vectors is not None and vectors.shape[0] == users.shape[0]
        local = embedding_score_fn(vectors, self.items)  # rows of this batch, users sorted
        return lambda chunk: local(np.searchsorted(users, chunk))


def _per_user_rows(
    relevant: DataFrame, excluded: DataFrame, user_vectors: DataFrame | None, column: str
) -> DataFrame:
    """One row per user with a relevant item: its relevant items (test positives minus its
    excluded pairs), its excluded items and, with ``user_vectors``, its vector."""
    pair = [F.col(USER).cast("long").alias(USER), F.col(ITEM).cast("long").alias(ITEM)]
    rel = relevant.select(*pair).distinct()
    excl = excluded.select(*pair).distinct()
    lists = (
        rel.join(excl, [USER, ITEM], "left_anti")
        .groupBy(USER)
        .agg(F.collect_list(ITEM).alias(_RELEVANT))
    )
    masked = (
        excl.join(lists.select(USER), USER, "left_semi")
        .groupBy(USER)
        .agg(F.collect_list(ITEM).alias(_EXCLUDED))
    )
    rows = lists.join(masked, USER, "left")
    if user_vectors is not None:
        vectors = user_vectors.select(
            F.col(USER).cast("long").alias(USER),
            F.col(column).cast("array<float>").alias(_VECTOR),
        )
        rows = rows.join(vectors, USER, "left")
    return rows


def _pairs(users: np.ndarray, lists: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.array([0 if v is None else len(v) for v in lists], dtype=np.int64)
    items = [np.asarray(v, dtype=np.int64) for v in lists if v is not None and len(v)]
    flat = np.concatenate(items) if items else np.zeros(0, dtype=np.int64)
    return np.repeat(users, sizes), flat


def _score_batches(
    batches: Iterator[pd.DataFrame],
    scorer: Any,
    n_items: int,
    ks: list[int],
    batch_size: int,
    missing_vectors: str,
) -> Iterator[pd.DataFrame]:
    names = metric_names(ks)
    for batch in batches:
        if batch.empty:
            continue
        rows = batch.sort_values(USER)
        users = rows[USER].to_numpy(np.int64)
        vectors = None
        if scorer.needs_vectors:
            if missing_vectors == "zeros":
                zero = np.zeros(scorer.items.shape[1], dtype=np.float32)
                rows[_VECTOR] = [zero if v is None else v for v in rows[_VECTOR]]
            if rows[_VECTOR].isna().any():
                missing = users[rows[_VECTOR].isna().to_numpy()][:5].tolist()
                raise ValueError(
                    f"users {missing} have relevant test items but no vector: give a vector "
                    "for every user of the test pairs"
                )
            vectors = np.stack(rows[_VECTOR].to_numpy()).astype(np.float32)
        test_users, test_items = _pairs(users, rows[_RELEVANT])
        excl_users, excl_items = _pairs(users, rows[_EXCLUDED])
        result = full_catalogue_topk_metrics(
            scorer.score_fn(users, vectors),
            n_items,
            test_users,
            test_items,
            excl_users,
            excl_items,
            ks=ks,
            batch_size=batch_size,
            per_user=True,
        )["per_user"]
        yield pd.DataFrame({USER: result["users"], **{name: result[name] for name in names}})


def user_topk_metrics(
    relevant: DataFrame,
    excluded: DataFrame,
    scorer: ItemScores | DotProduct,
    n_items: int,
    ks: Sequence[int] = (10, 20, 100),
    *,
    user_vectors: DataFrame | None = None,
    vector_column: str = "embedding",
    missing_vectors: str = "error",
    batch_size: int = 1024,
) -> DataFrame:
    """Recall@K and NDCG@K of every user with a relevant item, one row per user.

    Args:
        relevant: ``user_idx, item_idx``: the relevant (positive) test pairs.
        excluded: ``user_idx, item_idx``: pairs masked out before the top K (the users'
            training items, ...); a relevant pair that is also excluded is not relevant.
        scorer: :class:`ItemScores` or :class:`DotProduct` over ``n_items`` items.
        n_items: catalogue size; item indexes lie in ``[0, n_items)``.
        ks: cut-offs K >= 1.
        user_vectors: ``user_idx, <vector_column>`` (for :class:`DotProduct`).
        missing_vectors: a user of the test pairs without a vector is an ``"error"``, or
            scores every item 0 with ``"zeros"`` (ALS for a user it never saw: the ranking
            then falls back to the lowest item indexes).
        batch_size: users scored at once on an executor (a ``(batch, n_items)`` matrix).

    Returns:
        A lazy frame ``user_idx: long, recall@K: double, ndcg@K: double, ...``. Evaluating it
        raises (from the executor) what :func:`full_catalogue_topk_metrics` raises on bad
        indexes, NaN scores, or a user without a vector.
    """
    n_items = _check_n_items(n_items)
    ks = _check_ks(ks)
    if missing_vectors not in ("error", "zeros"):
        raise ValueError(f"missing_vectors is 'error' or 'zeros', got {missing_vectors!r}")
    if scorer.needs_vectors and user_vectors is None:
        raise ValueError(f"{type(scorer).__name__} scores user vectors: give user_vectors")
    rows = _per_user_rows(relevant, excluded, user_vectors if scorer.needs_vectors else None,
                          vector_column)  # fmt: skip
    schema = ", ".join([f"{USER} long", *[f"`{name}` double" for name in metric_names(ks)]])
    # Broadcast once per executor, not shipped with every task (an item matrix of 100K x 64
    # floats is 25 MB).
    shipped = rows.sparkSession.sparkContext.broadcast(scorer)
    return rows.mapInPandas(
        lambda batches: _score_batches(
            batches, shipped.value, n_items, ks, batch_size, missing_vectors
        ),
        schema,
    )


def summarise(per_user: DataFrame, ks: Sequence[int]) -> dict[str, Any]:
    """The averages of :func:`user_topk_metrics`'s rows, as
    :func:`full_catalogue_topk_metrics` reports them: ``recall@K``, ``ndcg@K`` (every K),
    ``n_eval_users``.

    Raises:
        ValueError: no user could be evaluated (no relevant test pair is left).
    """
    names = metric_names(ks)
    means: list[Column] = [F.avg(F.col(f"`{name}`")).alias(name) for name in names]
    row = per_user.agg(F.count(F.lit(1)).alias("n_eval_users"), *means).first()
    if not row["n_eval_users"]:
        raise ValueError(
            "No user can be evaluated: the test split has no positive pair that is not also "
            "excluded. Check that the test split keeps positive interactions (enlarge it, or "
            "lower the label threshold)."
        )
    return {**{name: float(row[name]) for name in names}, "n_eval_users": int(row["n_eval_users"])}


def collect_per_user(per_user: DataFrame, ks: Sequence[int]) -> dict[str, Any]:
    """:func:`user_topk_metrics`'s rows brought to the driver in the form
    :func:`full_catalogue_topk_metrics` returns with ``per_user=True``: the averages,
    ``n_eval_users`` and ``per_user`` (``users`` sorted, one array per metric), for paired
    intervals. A few numbers per evaluated user, never the pairs.

    Raises:
        ValueError: no user could be evaluated (as :func:`summarise`).
    """
    names = metric_names(ks)
    rows = per_user.toPandas().sort_values(USER)
    if rows.empty:
        summarise(per_user, ks)  # raises, naming the empty test split
    result: dict[str, Any] = {name: float(rows[name].sum() / len(rows)) for name in names}
    result["n_eval_users"] = len(rows)
    result["per_user"] = {
        "users": rows[USER].to_numpy(np.int64),
        **{name: rows[name].to_numpy(np.float64) for name in names},
    }
    return result


def pair_scores(
    pairs: DataFrame, user_vectors: DataFrame, items: np.ndarray, vector_column: str = "embedding"
) -> DataFrame:
    """``label, score``: the dot product ``<user vector, items[item]>`` of every labelled
    pair (``user_idx, item_idx, label``) whose user has a vector, scored on the executors
    (``items`` broadcast), in float32 like the model's own scores."""
    shipped = pairs.sparkSession.sparkContext.broadcast(np.asarray(items, dtype=np.float32))

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            users = np.stack(batch[_VECTOR].to_numpy()).astype(np.float32)
            rows = shipped.value[batch[ITEM].to_numpy(np.int64)]
            yield pd.DataFrame(
                {
                    "label": batch["label"].to_numpy(np.int64),
                    "score": np.einsum("ij,ij->i", users, rows),
                }
            )

    vectors = user_vectors.select(
        F.col(USER).cast("long").alias(USER),
        F.col(vector_column).cast("array<float>").alias(_VECTOR),
    )
    labelled = pairs.select(
        F.col(USER).cast("long").alias(USER),
        F.col(ITEM).cast("long").alias(ITEM),
        F.col("label").cast("long").alias("label"),
    )
    return labelled.join(vectors, USER, "inner").mapInPandas(score, "label long, score float")
