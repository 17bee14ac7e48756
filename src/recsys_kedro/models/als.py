"""Implicit-feedback ALS (Spark MLlib) as a retrieval baseline: fit, export factors, grid search.

:class:`pyspark.ml.recommendation.ALS` with ``implicitPrefs=True`` (Hu, Koren & Volinsky,
2008) is trained in Spark on an interactions DataFrame with the columns ``user_idx``,
``item_idx`` (dense indexes from 0), ``label`` (1 = positive) and, for the ``ratings``
signal, ``rating``. What ALS learns from is the *signal*:

* ``positives``: the rows with ``label == 1``, each with preference 1.0;
* ``ratings``: every rated row, with preference = its rating (the confidence grows with it).

The factors are then exported as dense numpy matrices indexed by ``user_idx`` / ``item_idx``
(rows of zeros for the ids ALS never saw), so that the ranking is done by
:func:`recsys_kedro.evaluation.retrieval.full_catalogue_topk_metrics` with
:func:`~recsys_kedro.evaluation.retrieval.embedding_score_fn`: the same full-catalogue
rules, exclusions and tie-breaking as every other model of the project.

Nothing here creates a SparkSession or knows about Kedro: the functions take the caller's
DataFrames.
"""

from __future__ import annotations

import itertools
import logging
import operator
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_kedro.evaluation.retrieval import embedding_score_fn, full_catalogue_topk_metrics

__all__ = [
    "SIGNALS",
    "ALSGrid",
    "ALSSearchResult",
    "factor_matrices",
    "fit_als",
    "grid_search_als",
    "preferences",
]

logger = logging.getLogger(__name__)

USER, ITEM, LABEL, RATING = "user_idx", "item_idx", "label", "rating"
PREFERENCE = "preference"
SIGNALS = ("positives", "ratings")
_SELECT_BY = re.compile(r"^(recall|ndcg)@(\d+)$")


# --------------------------------------------------------------------------------------
# the grid
# --------------------------------------------------------------------------------------


def _values(values: Any, name: str, cast: type) -> tuple:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        values = [values]  # a single value is a grid of one
    if len(values) == 0:
        raise ValueError(f"the ALS grid's {name} list is empty: give at least one value")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            raise ValueError(f"the ALS grid's {name} must hold numbers, got {list(values)}")
        if cast is int and int(v) != v:
            raise ValueError(f"the ALS grid's {name} must hold integers, got {list(values)}")
        out.append(cast(v))
    return tuple(dict.fromkeys(out))  # de-duplicated, order kept


@dataclass(frozen=True)
class ALSGrid:
    """The hyper-parameters tried: every combination of ``rank`` x ``reg_param`` x ``alpha``.

    Raises:
        ValueError: if a list is empty or holds a rank < 1, a negative regularisation or an
            alpha <= 0.
    """

    rank: tuple[int, ...]
    reg_param: tuple[float, ...]
    alpha: tuple[float, ...]

    def __post_init__(self) -> None:
        rank = _values(self.rank, "rank", int)
        reg_param = _values(self.reg_param, "reg_param", float)
        alpha = _values(self.alpha, "alpha", float)
        if min(rank) < 1:
            raise ValueError(f"every ALS rank must be >= 1, got {list(rank)}")
        if min(reg_param) < 0:
            raise ValueError(f"every ALS reg_param must be >= 0, got {list(reg_param)}")
        if min(alpha) <= 0:
            raise ValueError(f"every ALS alpha must be > 0, got {list(alpha)}")
        object.__setattr__(self, "rank", rank)
        object.__setattr__(self, "reg_param", reg_param)
        object.__setattr__(self, "alpha", alpha)

    @classmethod
    def from_mapping(cls, grid: Mapping[str, Any]) -> ALSGrid:
        """From ``{"rank": [...], "reg_param": [...], "alpha": [...]}`` (no other keys)."""
        if not isinstance(grid, Mapping):
            raise ValueError(
                f"the ALS grid must map rank / reg_param / alpha to lists, got {grid!r}"
            )
        expected = {"rank", "reg_param", "alpha"}
        missing, unknown = expected - set(grid), set(grid) - expected
        if missing or unknown:
            raise ValueError(
                f"the ALS grid needs exactly the keys {sorted(expected)}; "
                f"missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        return cls(rank=grid["rank"], reg_param=grid["reg_param"], alpha=grid["alpha"])

    def points(self) -> list[dict[str, Any]]:
        """Every grid point as ``{"rank", "reg_param", "alpha"}``, rank varying slowest."""
        return [
            {"rank": r, "reg_param": g, "alpha": a}
            for r, g, a in itertools.product(self.rank, self.reg_param, self.alpha)
        ]


def _parse_select_by(select_by: str) -> tuple[str, int]:
    match = _SELECT_BY.match(str(select_by))
    if not match or int(match.group(2)) < 1:
        raise ValueError(f"select_by must be 'recall@K' or 'ndcg@K' with K >= 1, got {select_by!r}")
    return select_by, int(match.group(2))


# --------------------------------------------------------------------------------------
# fitting and factors
# --------------------------------------------------------------------------------------


def _check_signal(signal: str) -> str:
    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
    return signal


def preferences(interactions: DataFrame, signal: str = "positives") -> DataFrame:
    """``user_idx, item_idx, preference`` (int, int, float) rows ALS learns from.

    ``positives``: rows with ``label == 1``, preference 1.0; ``ratings``: every row,
    preference = ``rating``. A pair that occurs twice keeps its largest preference.

    Raises:
        ValueError: on an unknown signal or a missing column.
    """
    signal = _check_signal(signal)
    needed = [USER, ITEM, LABEL if signal == "positives" else RATING]
    missing = [c for c in needed if c not in interactions.columns]
    if missing:
        raise ValueError(
            f"the interactions lack the column(s) {missing} needed by the {signal!r} signal; "
            f"they have {interactions.columns}"
        )
    if signal == "positives":
        rows = interactions.where(F.col(LABEL) == 1).withColumn(PREFERENCE, F.lit(1.0))
    else:
        rows = interactions.where(F.col(RATING).isNotNull()).withColumn(
            PREFERENCE, F.col(RATING).cast("float")
        )
    return (
        rows.select(F.col(USER).cast("int"), F.col(ITEM).cast("int"), PREFERENCE)
        .groupBy(USER, ITEM)
        .agg(F.max(PREFERENCE).cast("float").alias(PREFERENCE))
    )


def _fit(
    prefs: DataFrame,
    *,
    rank: int,
    reg_param: float,
    alpha: float,
    max_iter: int,
    seed: int,
    num_blocks: int | None,
) -> ALSModel:
    als = ALS(
        rank=int(rank),
        maxIter=int(max_iter),
        regParam=float(reg_param),
        alpha=float(alpha),
        implicitPrefs=True,
        userCol=USER,
        itemCol=ITEM,
        ratingCol=PREFERENCE,
        seed=int(seed),
    )
    if num_blocks is not None:
        als = als.setNumBlocks(int(num_blocks))
    return als.fit(prefs)


def _require_rows(prefs: DataFrame, signal: str) -> DataFrame:
    """``prefs`` itself, once it is known to hold at least one row."""
    if prefs.limit(1).count() == 0:
        raise ValueError(
            f"no training interaction carries the {signal!r} signal: nothing to fit ALS on"
        )
    return prefs


def _check_fit_args(max_iter: int, num_blocks: int | None) -> None:
    if operator.index(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if num_blocks is not None and operator.index(num_blocks) < 1:
        raise ValueError(f"num_blocks must be >= 1 (or None for Spark's default), got {num_blocks}")


def fit_als(
    interactions: DataFrame,
    *,
    rank: int,
    reg_param: float,
    alpha: float,
    signal: str = "positives",
    max_iter: int = 10,
    seed: int = 42,
    num_blocks: int | None = None,
) -> ALSModel:
    """An implicit-preference ALS model fitted on ``interactions`` (see :func:`preferences`).

    ``num_blocks``: user and item blocks (Spark's default, 10, when ``None``).

    Raises:
        ValueError: on bad hyper-parameters, or when the signal leaves no interaction.
    """
    ALSGrid(rank=(rank,), reg_param=(reg_param,), alpha=(alpha,))  # validates the values
    _check_fit_args(max_iter, num_blocks)
    prefs = _require_rows(preferences(interactions, signal), signal)
    return _fit(
        prefs,
        rank=rank,
        reg_param=reg_param,
        alpha=alpha,
        max_iter=max_iter,
        seed=seed,
        num_blocks=num_blocks,
    )


def _dense(factors: DataFrame, n_rows: int, rank: int, what: str) -> np.ndarray:
    frame = factors.select("id", "features").toPandas()
    out = np.zeros((n_rows, rank), dtype=np.float32)
    if frame.empty:
        return out
    ids = frame["id"].to_numpy(np.int64)
    if ids.min() < 0 or ids.max() >= n_rows:
        raise ValueError(
            f"ALS {what} ids lie in [{ids.min()}, {ids.max()}], outside [0, n_{what}s={n_rows})"
        )
    out[ids] = np.stack(frame["features"].to_numpy()).astype(np.float32)
    return out


def factor_matrices(model: ALSModel, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense float32 factors ``(n_users, rank)`` and ``(n_items, rank)``, row = index.

    Ids ALS never saw (no interaction with the signal) get a row of zeros: every item then
    scores 0 for such a user, and the ranking falls back to the lowest item indexes.

    Raises:
        ValueError: if the model knows an id outside ``[0, n_users)`` / ``[0, n_items)``.
    """
    n_users, n_items = operator.index(n_users), operator.index(n_items)
    if n_users < 1 or n_items < 1:
        raise ValueError(f"n_users and n_items must be >= 1, got {n_users} and {n_items}")
    rank = int(model.rank)
    return (
        _dense(model.userFactors, n_users, rank, "user"),
        _dense(model.itemFactors, n_items, rank, "item"),
    )


# --------------------------------------------------------------------------------------
# grid search on a validation split
# --------------------------------------------------------------------------------------


@dataclass
class ALSSearchResult:
    """What :func:`grid_search_als` found.

    Attributes:
        params: the chosen ``{"rank", "reg_param", "alpha"}``.
        table: one row per grid point, in grid order: its parameters, the validation
            ``recall@K`` / ``ndcg@K`` for every K, ``n_eval_users`` and ``fit_s`` (seconds
            to fit and export the factors).
        user_factors, item_factors: the chosen point's dense factors (see
            :func:`factor_matrices`).
        select_by: the validation metric that chose ``params`` (higher is better; ties go
            to the earlier grid point).
    """

    params: dict[str, Any]
    table: pd.DataFrame
    user_factors: np.ndarray = field(repr=False)
    item_factors: np.ndarray = field(repr=False)
    select_by: str = "ndcg@10"


def _train_pairs(train: DataFrame) -> tuple[np.ndarray, np.ndarray]:
    pairs = train.select(F.col(USER).cast("long"), F.col(ITEM).cast("long")).toPandas()
    return pairs[USER].to_numpy(np.int64), pairs[ITEM].to_numpy(np.int64)


def grid_search_als(
    train: DataFrame,
    validation_users: np.ndarray,
    validation_items: np.ndarray,
    n_users: int,
    n_items: int,
    grid: ALSGrid | Mapping[str, Any],
    *,
    signal: str = "positives",
    max_iter: int = 10,
    seed: int = 42,
    select_by: str = "ndcg@10",
    ks: Sequence[int] = (),
    exclude_users: np.ndarray | None = None,
    exclude_items: np.ndarray | None = None,
    num_blocks: int | None = None,
    batch_size: int = 1024,
) -> ALSSearchResult:
    """Fit ALS at every grid point on ``train``, keep the best on the validation pairs.

    Each point is scored by :func:`full_catalogue_topk_metrics` with the dot product of its
    factors: relevant = the ``(validation_users, validation_items)`` pairs, excluded = the
    users' training pairs (every row of ``train``, whatever its label) unless
    ``exclude_users`` / ``exclude_items`` are given. ``ks`` are reported in the table
    besides the K of ``select_by``. The input preferences are cached for the search and
    released afterwards; only the best point's factors are kept in memory.

    Raises:
        ValueError: on a bad grid, signal, ``select_by`` or ``max_iter``, when the signal
            leaves no training interaction, or when no validation pair can be evaluated.
    """
    grid = grid if isinstance(grid, ALSGrid) else ALSGrid.from_mapping(grid)
    signal = _check_signal(signal)
    select_by, select_k = _parse_select_by(select_by)
    _check_fit_args(max_iter, num_blocks)
    eval_ks = list(dict.fromkeys([*(int(k) for k in ks), select_k]))
    if (exclude_users is None) != (exclude_items is None):
        raise ValueError("give both exclude_users and exclude_items, or neither")
    if exclude_users is None:
        exclude_users, exclude_items = _train_pairs(train)

    prefs = preferences(train, signal).cache()
    try:
        _require_rows(prefs, signal)
        rows: list[dict[str, Any]] = []
        best: tuple[float, dict[str, Any], np.ndarray, np.ndarray] | None = None
        for point in grid.points():
            start = time.perf_counter()
            model = _fit(prefs, max_iter=max_iter, seed=seed, num_blocks=num_blocks, **point)
            users, items = factor_matrices(model, n_users, n_items)
            fit_s = time.perf_counter() - start
            metrics = full_catalogue_topk_metrics(
                embedding_score_fn(users, items),
                n_items=n_items,
                test_users=validation_users,
                test_items=validation_items,
                exclude_users=exclude_users,
                exclude_items=exclude_items,
                ks=eval_ks,
                batch_size=batch_size,
            )
            rows.append({**point, **metrics, "fit_s": fit_s})
            logger.info(
                "ALS rank=%d reg_param=%g alpha=%g: validation %s %.4f (fit %.1fs)",
                point["rank"],
                point["reg_param"],
                point["alpha"],
                select_by,
                metrics[select_by],
                fit_s,
            )
            if best is None or metrics[select_by] > best[0]:
                best = (metrics[select_by], point, users, items)
    finally:
        prefs.unpersist()
    assert best is not None  # the grid is never empty
    _, params, users, items = best
    return ALSSearchResult(
        params=dict(params),
        table=pd.DataFrame(rows),
        user_factors=users,
        item_factors=items,
        select_by=select_by,
    )
