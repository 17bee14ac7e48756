"""Implicit-feedback ALS (Spark MLlib) as a retrieval baseline: fit, export factors, search.

:class:`pyspark.ml.recommendation.ALS` with ``implicitPrefs=True`` (Hu, Koren & Volinsky,
2008) is trained in Spark on an interactions DataFrame with the columns ``user_idx``,
``item_idx`` (dense indexes from 0), ``label`` (1 = positive) and, for the ``ratings``
signal, ``rating``. What ALS learns from is the *signal*:

* ``positives``: the rows with ``label == 1``, each with preference 1.0;
* ``ratings``: every rated row, with preference = its rating (the confidence grows with it).

A model is scored in Spark (:func:`topk_metrics`): the user factors stay there, the item
factors are exported as a dense numpy matrix indexed by ``item_idx`` (rows of zeros for the
items ALS never saw) and shipped to the executors, and the ranking is done by
:func:`recsys_kedro.evaluation.distributed.user_topk_metrics`: the same full-catalogue rules,
exclusions and tie-breaking as every other model of the project. A user ALS never saw
scores every item 0. :func:`factor_matrices` still gives both sides as dense matrices.

Nothing here creates a SparkSession or knows about Kedro: the functions take the caller's
DataFrames.
"""

from __future__ import annotations

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

from recsys_kedro.evaluation.distributed import DotProduct, summarise, user_topk_metrics
from recsys_kedro.tuning.study import SearchSpace, run_study

__all__ = [
    "ALS_DIMENSIONS",
    "SIGNALS",
    "ALSSearchResult",
    "als_search_space",
    "boundary_hits",
    "factor_matrices",
    "fit_als",
    "preferences",
    "search_als",
]

logger = logging.getLogger(__name__)

USER, ITEM, LABEL, RATING = "user_idx", "item_idx", "label", "rating"
PREFERENCE = "preference"
SIGNALS = ("positives", "ratings")
_SELECT_BY = re.compile(r"^(recall|ndcg)@(\d+)$")


# --------------------------------------------------------------------------------------
# the search space
# --------------------------------------------------------------------------------------

#: What an ALS study may search over (``max_iter``, if not searched, is a fixed setting).
ALS_DIMENSIONS = ("rank", "reg_param", "alpha", "max_iter")
_LOWEST = {"rank": 1, "reg_param": 0.0, "alpha": 1e-12, "max_iter": 1}
_INT_DIMENSIONS = ("rank", "max_iter")


def als_search_space(space: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> SearchSpace:
    """The ALS study's space from ``[{name, type, low, high, log} | {name, choices}, ...]``
    (the format of ``two_tower.tune.space``) or a ``{name: {...}}`` mapping.

    Raises:
        ValueError: a dimension ALS does not have, a missing ``rank`` / ``reg_param`` /
            ``alpha``, a float rank or iteration count, or a range below what ALS takes.
    """
    if isinstance(space, Mapping):
        dims = {str(k): dict(v) for k, v in space.items()}
    else:
        dims = {str(d.get("name")): {k: v for k, v in d.items() if k != "name"} for d in space}
    unknown = sorted(set(dims) - set(ALS_DIMENSIONS))
    missing = sorted({"rank", "reg_param", "alpha"} - set(dims))
    if unknown or missing:
        raise ValueError(
            f"the ALS search space takes {list(ALS_DIMENSIONS)}: unknown {unknown}, "
            f"missing {missing}"
        )
    for name, dim in dims.items():
        if name in _INT_DIMENSIONS and dim.get("type") == "float":
            raise ValueError(f"the ALS {name} is a whole number: give it type int")
        values = dim.get("choices") or [dim.get("low"), dim.get("high")]
        if any(v is None or float(v) < _LOWEST[name] for v in values):
            raise ValueError(f"the ALS {name} must be >= {_LOWEST[name]}, got {values}")
    return SearchSpace(dims)


def _check_point(rank: Any, reg_param: Any, alpha: Any) -> None:
    if isinstance(rank, bool) or int(rank) != rank or rank < 1:
        raise ValueError(f"the ALS rank must be an integer >= 1, got {rank!r}")
    if reg_param < 0:
        raise ValueError(f"the ALS reg_param must be >= 0, got {reg_param!r}")
    if alpha <= 0:
        raise ValueError(f"the ALS alpha must be > 0, got {alpha!r}")


def boundary_hits(space: SearchSpace, chosen: Mapping[str, Any], margin: float = 0.05) -> list[str]:
    """Numeric dimensions whose chosen value lies within ``margin`` of the range's ends (in
    log units for a log-scaled one): a best point there says the range was too narrow."""
    import math

    hits = []
    for name, dim in space.dimensions.items():
        if dim["type"] == "categorical" or name not in chosen:
            continue
        scale = math.log if dim.get("log") else float
        low, high, value = (scale(float(v)) for v in (dim["low"], dim["high"], chosen[name]))
        if value <= low + margin * (high - low):
            hits.append(f"{name} at the low end ({chosen[name]})")
        elif value >= high - margin * (high - low):
            hits.append(f"{name} at the high end ({chosen[name]})")
    return hits


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


#: MLlib's ALS cuts its lineage every 10 iterations only into a checkpoint folder; without
#: one, a longer run's task serialisation overflows the driver's stack (at 20 here).
_ITERATIONS_WITHOUT_CHECKPOINTS = 12


def _check_lineage(data: DataFrame, max_iter: int) -> None:
    if max_iter > _ITERATIONS_WITHOUT_CHECKPOINTS and not (
        data.sparkSession.sparkContext.getCheckpointDir()
    ):
        raise ValueError(
            f"ALS with max_iter {max_iter} (> {_ITERATIONS_WITHOUT_CHECKPOINTS}) needs a Spark "
            "checkpoint folder, or its lineage overflows the driver's stack: set "
            "spark.checkpoint.dir in the Spark configuration"
        )


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
    _check_point(rank, reg_param, alpha)
    _check_fit_args(max_iter, num_blocks)
    _check_lineage(interactions, max_iter)
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
# hyperparameter search on a validation split
# --------------------------------------------------------------------------------------


def _check_user_ids(model: ALSModel, n_users: int) -> None:
    """The model's user ids lie in ``[0, n_users)`` (one aggregate over its factors)."""
    row = model.userFactors.agg(F.min("id").alias("lo"), F.max("id").alias("hi")).first()
    if row["lo"] is not None and (row["lo"] < 0 or row["hi"] >= n_users):
        raise ValueError(
            f"ALS user ids lie in [{row['lo']}, {row['hi']}], outside [0, n_users={n_users})"
        )


def user_vectors(model: ALSModel) -> DataFrame:
    """``user_idx, embedding``: the model's user factors, left in Spark (users ALS never saw
    have no row)."""
    return model.userFactors.select(
        F.col("id").cast("long").alias(USER), F.col("features").alias("embedding")
    )


def item_factor_matrix(model: ALSModel, n_items: int) -> np.ndarray:
    """The dense ``(n_items, rank)`` item factors (zero rows for unseen items): the item side
    is what every scorer ships to the executors."""
    return _dense(model.itemFactors, operator.index(n_items), int(model.rank), "item")


def topk_metrics(
    model: ALSModel,
    relevant: DataFrame,
    excluded: DataFrame,
    n_items: int,
    ks: Sequence[int],
    batch_size: int = 1024,
) -> DataFrame:
    """Per-user Recall@K / NDCG@K of ``model``'s dot product, computed in Spark
    (:func:`recsys_kedro.evaluation.distributed.user_topk_metrics`); a user ALS never saw
    scores every item 0."""
    return user_topk_metrics(
        relevant,
        excluded,
        DotProduct(item_factor_matrix(model, n_items)),
        n_items,
        ks,
        user_vectors=user_vectors(model),
        missing_vectors="zeros",
        batch_size=batch_size,
    )


@dataclass
class ALSSearchResult:
    """What :func:`search_als` found.

    Attributes:
        params: the chosen ``{"rank", "reg_param", "alpha", "max_iter"}``.
        table: one row per trial, in trial order: its parameters, the validation
            ``recall@K`` / ``ndcg@K`` for every K, ``n_eval_users`` and ``fit_s`` (seconds
            to fit); a failed trial has its ``error``.
        model: the chosen point's fitted model (its factors stay in Spark).
        select_by: the validation metric that chose ``params`` (higher is better).
        on_boundary: the searched dimensions whose chosen value is at an end of its range.
    """

    params: dict[str, Any]
    table: pd.DataFrame
    model: ALSModel = field(repr=False)
    select_by: str = "ndcg@10"
    on_boundary: list[str] = field(default_factory=list)


def _train_pairs(train: DataFrame) -> DataFrame:
    return train.select(F.col(USER).cast("long"), F.col(ITEM).cast("long"))


def search_als(
    train: DataFrame,
    validation: DataFrame,
    n_users: int,
    n_items: int,
    space: SearchSpace | Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    n_trials: int = 20,
    study_seed: int = 0,
    signal: str = "positives",
    max_iter: int = 10,
    seed: int = 42,
    select_by: str = "ndcg@10",
    ks: Sequence[int] = (),
    excluded: DataFrame | None = None,
    num_blocks: int | None = None,
    batch_size: int = 1024,
) -> ALSSearchResult:
    """A seeded TPE study (:func:`recsys_kedro.tuning.study.run_study`, the method and
    budget of the two-tower's search) over ``space``: each trial fits ALS on ``train`` and
    is scored on the validation pairs; the best trial's model is kept.

    Each trial is scored in Spark by :func:`topk_metrics` (the pinned rules of
    :func:`full_catalogue_topk_metrics`) with the dot product of its factors: relevant = the
    ``validation`` pairs (``user_idx, item_idx``), excluded = the users' training pairs
    (every row of ``train``, whatever its label) unless ``excluded`` is given. ``ks`` are
    reported in the table besides the K of ``select_by``; ``max_iter`` is used where the
    space does not search it; ``n_users`` bounds the user ids. The input preferences are
    cached for the search and released afterwards. A best point at an end of a searched
    range is logged (widen it) and listed in ``on_boundary``.

    Raises:
        ValueError: on a bad space, signal, ``select_by`` or ``max_iter``, when the signal
            leaves no training interaction, or when no validation pair can be evaluated.
    """
    space = space if isinstance(space, SearchSpace) else als_search_space(space)
    signal = _check_signal(signal)
    select_by, select_k = _parse_select_by(select_by)
    _check_fit_args(max_iter, num_blocks)
    eval_ks = list(dict.fromkeys([*(int(k) for k in ks), select_k]))
    iterations = space.dimensions.get("max_iter", {"high": max_iter})
    _check_lineage(train, int(max(iterations.get("choices") or [iterations["high"]])))
    if excluded is None:
        excluded = _train_pairs(train)

    prefs = preferences(train, signal).cache()
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] = {}

    def trial(values: dict[str, Any]) -> dict[str, float]:
        point = {"max_iter": max_iter, **values}
        point = {k: int(v) if k in _INT_DIMENSIONS else float(v) for k, v in point.items()}
        start = time.perf_counter()
        model = _fit(prefs, seed=seed, num_blocks=num_blocks, **point)
        fit_s = time.perf_counter() - start
        _check_user_ids(model, n_users)
        metrics = summarise(
            topk_metrics(model, validation, excluded, n_items, eval_ks, batch_size), eval_ks
        )
        rows.append({**point, **metrics, "fit_s": fit_s})
        if not best or metrics[select_by] > best["value"]:
            best.update(value=metrics[select_by], point=point, model=model)
        return {k: float(v) for k, v in metrics.items()}

    try:
        _require_rows(prefs, signal)
        study = run_study(trial, space, metric=select_by, n_trials=n_trials, seed=study_seed)
    finally:
        prefs.unpersist()
    hits = boundary_hits(space, study.best_params or {})
    if hits:
        logger.warning("the ALS search chose %s: widen its range", ", ".join(hits))
    return ALSSearchResult(
        params=dict(best["point"]),
        table=pd.DataFrame(rows),
        model=best["model"],
        select_by=select_by,
        on_boundary=hits,
    )
