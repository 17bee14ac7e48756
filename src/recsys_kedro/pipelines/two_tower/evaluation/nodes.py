"""Evaluation nodes: embeddings, AUC, full-catalogue retrieval metrics vs popularity and ALS."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pyspark.sql import DataFrame as SparkDataFrame

from recsys_kedro.evaluation.distributed import (
    DotProduct,
    ItemScores,
    collect_per_user,
    pair_scores,
    user_topk_metrics,
)
from recsys_kedro.evaluation.plots import metrics_at_k_figure
from recsys_kedro.evaluation.retrieval import (
    auc,
    embedding_matrix,
    paired_intervals,
)
from recsys_kedro.models.als import als_search_space, search_als, topk_metrics
from recsys_kedro.models.spark_encode import encode_ids, tower_embeddings
from recsys_kedro.models.two_tower import model_from_file
from recsys_kedro.reporting import RUN_DESCRIPTION_KEYS, metrics_and_tags

logger = logging.getLogger(__name__)

_ALS_NAME = "ALS (Spark MLlib)"  # its legend in the metric-at-K figure
_ALS_HINT = "see two_tower.evaluation.als in conf/base/parameters_two_tower.yml"
_ALS_KEYS = {"enabled", "signal", "max_iter", "seed", "select_by", "num_blocks", "search"}
_ALS_SEARCH_KEYS = {"n_trials", "seed", "space"}


def embed_users_and_items(
    model_checkpoint: dict[str, Any], user_index: SparkDataFrame, item_index: pd.DataFrame
) -> tuple[SparkDataFrame, pd.DataFrame]:
    """Query embeddings of every indexed user and candidate embeddings of every item.

    The users' are computed in Spark (the model broadcast, each partition of users encoded on
    the executors: they never pass through the driver, however many there are); the items'
    in this process, where the vector index is built from them.

    Returns:
        ``user_idx, user_id, embedding`` (Spark) and ``item_idx, item_id, embedding`` (in
        index order), one float32 vector per row: what a vector index or a serving job loads.
    """
    users = tower_embeddings(user_index, model_checkpoint, "user")
    model = model_from_file(model_checkpoint)
    items = item_index.sort_values("item_idx").reset_index(drop=True)
    items["embedding"] = list(encode_ids(model.encode_items, items["item_idx"].to_numpy()))
    return users, items


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers, so the result is JSON-serialisable."""
    return value.item() if isinstance(value, np.generic) else value


def fit_als_baseline(
    train: SparkDataFrame,
    validation: SparkDataFrame,
    test: SparkDataFrame,
    split_statistics: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Any]:
    """Spark MLlib implicit ALS, tuned on validation, scored on test like the two-tower.

    ALS is searched like the two-tower (a seeded TPE study of ``als.search.n_trials``
    trials over ``als.search.space``: rank, reg_param, alpha, max_iter;
    :func:`recsys_kedro.models.als.search_als`), each trial fitted in Spark on the training
    split; the trial with the best validation ``select_by`` metric (training items excluded)
    is kept and its factors are scored on the test split by the same full-catalogue
    evaluation, with the same exclusions and Ks, as :func:`evaluate_retrieval` uses for the
    model and the popularity baseline.

    Returns:
        ``{"enabled": False}`` when ``als.enabled`` is false (nothing is trained); otherwise
        ``enabled``, the settings used, the ``search`` (space, trials, seed), the chosen
        ``params`` (rank, reg_param, alpha, max_iter), ``on_boundary`` (chosen values at an
        end of their range), the ``validation`` table (one row per trial), the ``test``
        metrics (``recall@K``, ``ndcg@K`` for every K, ``n_eval_users``) and ``search_s``.
    """
    als = params.get("als") or {}
    if not als.get("enabled", False):
        logger.info("ALS baseline disabled (two_tower.evaluation.als.enabled is false)")
        return {"enabled": False}
    unknown = set(als) - _ALS_KEYS
    if unknown:
        raise ValueError(f"unknown ALS setting(s) {sorted(unknown)} ({_ALS_HINT})")
    search_conf = dict(als.get("search") or {})
    unknown = set(search_conf) - _ALS_SEARCH_KEYS
    if unknown or "space" not in search_conf:
        raise ValueError(
            f"two_tower.evaluation.als.search takes {sorted(_ALS_SEARCH_KEYS)} with a "
            f"'space' (unknown: {sorted(unknown)}) ({_ALS_HINT})"
        )
    try:
        space = als_search_space(search_conf["space"])
        n_trials = int(search_conf.get("n_trials", 20))
        study_seed = int(search_conf.get("seed", 0))
        settings = {
            "signal": str(als.get("signal", "positives")),
            "max_iter": int(als.get("max_iter", 10)),
            "seed": int(als.get("seed", 42)),
            "select_by": str(als.get("select_by", "ndcg@10")),
            "num_blocks": None if als.get("num_blocks") is None else int(als["num_blocks"]),
        }
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{exc} ({_ALS_HINT})") from exc
    n_users = int(split_statistics["n_users"])
    n_items = int(split_statistics["n_items"])
    ks = [int(k) for k in params["ks"]]
    batch_size = int(params.get("batch_size", 1024))
    relevant, excluded = _test_pairs(train, validation, test, params)
    val_positives = validation.where(validation["label"] == 1).select("user_idx", "item_idx")
    start = time.perf_counter()
    try:
        search = search_als(
            train,
            val_positives,
            n_users,
            n_items,
            space,
            n_trials=n_trials,
            study_seed=study_seed,
            ks=ks,  # validation excludes the training pairs (search_als's default)
            batch_size=batch_size,
            **settings,
        )
    except ValueError as exc:
        raise ValueError(f"{exc} ({_ALS_HINT})") from exc
    search_s = time.perf_counter() - start
    test_metrics = collect_per_user(
        topk_metrics(search.model, relevant, excluded, n_items, ks, batch_size), ks
    )
    per_user = test_metrics.pop("per_user")  # for the report's paired intervals
    logger.info(
        "ALS: %d trials in %.0fs; chose rank=%d reg_param=%g alpha=%g max_iter=%d "
        "(validation %s %.4f); test ndcg@%d %.4f",
        len(search.table),
        search_s,
        search.params["rank"],
        search.params["reg_param"],
        search.params["alpha"],
        search.params["max_iter"],
        settings["select_by"],
        search.table[settings["select_by"]].max(),
        ks[0],
        test_metrics[f"ndcg@{ks[0]}"],
    )
    return {
        "enabled": True,
        **settings,
        "search": {"n_trials": n_trials, "seed": study_seed, "space": space.dimensions},
        "params": {k: _plain(v) for k, v in search.params.items()},
        "on_boundary": search.on_boundary,
        "validation": [
            {k: _plain(v) for k, v in row.items()} for row in search.table.to_dict("records")
        ],
        "test": {k: _plain(v) for k, v in test_metrics.items()},
        "test_per_user": {
            k: [round(float(x), 6) if k != "users" else int(x) for x in v]
            for k, v in per_user.items()
        },
        "search_s": float(search_s),
    }


def _als_metrics(als_baseline: dict[str, Any], ks: list[int], n_eval_users: int) -> dict[str, Any]:
    """``als_recall@K``, ``als_ndcg@K`` (every K), ``als_rank/reg_param/alpha/max_iter``;
    {} if off."""
    if not als_baseline or not als_baseline.get("enabled", False):
        return {}
    test = als_baseline["test"]
    missing = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg") if f"{m}@{k}" not in test]
    if "test_per_user" not in als_baseline:
        missing.append("test_per_user")
    if missing or int(test["n_eval_users"]) != n_eval_users:
        raise ValueError(
            f"the ALS baseline was not evaluated like the model (missing {missing}; "
            f"{test['n_eval_users']} vs {n_eval_users} evaluated users): re-run the "
            "fit_als_baseline node with the same two_tower.evaluation parameters and splits"
        )
    out: dict[str, Any] = {}
    for k in ks:
        for name in ("recall", "ndcg"):
            out[f"als_{name}@{k}"] = float(test[f"{name}@{k}"])
    chosen = als_baseline["params"]
    out.update(
        als_rank=int(chosen["rank"]),
        als_reg_param=float(chosen["reg_param"]),
        als_alpha=float(chosen["alpha"]),
        als_max_iter=int(chosen.get("max_iter", als_baseline.get("max_iter", 10))),
    )
    return out


def _test_pairs(
    train: SparkDataFrame, validation: SparkDataFrame, test: SparkDataFrame, params: dict[str, Any]
) -> tuple[SparkDataFrame, SparkDataFrame]:
    """The relevant pairs (the positive test pairs) and the excluded ones (the users'
    training pairs, plus their validation pairs if ``exclude_validation_items``: seen before
    the test period), left in Spark."""
    pair = ["user_idx", "item_idx"]
    excluded = train.select(*pair)
    if params.get("exclude_validation_items", True):
        excluded = excluded.unionByName(validation.select(*pair))
    return test.where(test["label"] == 1).select(*pair), excluded


def evaluate_retrieval(
    user_embeddings: SparkDataFrame,
    item_embeddings: pd.DataFrame,
    train: SparkDataFrame,
    validation: SparkDataFrame,
    test: SparkDataFrame,
    item_popularity: pd.DataFrame,
    split_statistics: dict[str, Any],
    training_summary: dict[str, Any],
    als_baseline: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, dict[str, float]], dict[str, Any], Figure]:
    """Test-split metrics of the model, a most-popular and an ALS baseline, computed alike.

    AUC: the model's score ``<user, item>`` on every labelled test pair. Recall@K/NDCG@K:
    for every test user with a positive test item, the top K of the whole catalogue,
    with the user's training items (and validation items, if
    ``exclude_validation_items``) excluded; relevant = the positive test items. The model's
    and popularity's are computed in Spark, each partition of users on the executors
    (:mod:`recsys_kedro.evaluation.distributed`, the pinned rules of ``retrieval.py``); the
    splits stay in Spark. The ALS numbers come from :func:`fit_als_baseline` (same rules);
    with ALS disabled (``{"enabled": False}``) the ``als_*`` keys are left out.

    Returns:
        The metrics dictionary (``two_tower_metrics.json``), its quality numbers for MLflow
        metrics, its counts and settings (users, rows, kept epoch, ALS's chosen point) for
        MLflow tags, and the metric-at-K figure (model vs the baselines).
    """
    items = embedding_matrix(item_embeddings, "item_idx")
    n_items = items.shape[0]
    ks = [int(k) for k in params["ks"]]
    batch_size = int(params.get("batch_size", 1024))
    relevant, excluded = _test_pairs(train, validation, test, params)
    model_metrics = collect_per_user(
        user_topk_metrics(
            relevant, excluded, DotProduct(items), n_items, ks,
            user_vectors=user_embeddings, batch_size=batch_size,
        ),
        ks,
    )  # fmt: skip
    counts = item_popularity.sort_values("item_idx")["n_positive"].to_numpy(np.float64)
    baseline = collect_per_user(
        user_topk_metrics(
            relevant, excluded, ItemScores(counts), n_items, ks, batch_size=batch_size
        ),
        ks,
    )
    als = _als_metrics(als_baseline, ks, int(model_metrics["n_eval_users"]))
    scored = pair_scores(test, user_embeddings, items).toPandas()  # a label and a score per pair
    labels, test_scores = scored["label"].to_numpy(), scored["score"].to_numpy()
    metrics: dict[str, Any] = {}
    if 0 < labels.sum() < labels.size:
        metrics["test_auc"] = auc(labels, test_scores)
    else:  # implicit data: every kept interaction is a positive, so no AUC (ranking only)
        logger.info("test AUC left out: the test split's labels are all %d", int(labels[0]))
    for k in ks:
        for name in ("recall", "ndcg"):
            metrics[f"{name}@{k}"] = model_metrics[f"{name}@{k}"]
    for k in ks:
        for name in ("recall", "ndcg"):
            metrics[f"popularity_{name}@{k}"] = baseline[f"{name}@{k}"]
    metrics.update(als)
    metrics.update(
        paired_intervals(model_metrics["per_user"], baseline["per_user"], "popularity", ks)
    )
    if als:
        als_users = {k: np.asarray(v) for k, v in als_baseline["test_per_user"].items()}
        metrics.update(paired_intervals(model_metrics["per_user"], als_users, "als", ks))
    metrics.update(
        n_eval_users=int(model_metrics["n_eval_users"]),
        train_samples_per_s=float(training_summary["train_samples_per_s"]),
        epochs=int(training_summary["epochs"]),
        best_epoch=int(training_summary.get("best_epoch", training_summary["epochs"])),
        world_size=int(training_summary["world_size"]),
        n_users=int(split_statistics["n_users"]),
        n_items=int(split_statistics["n_items"]),
        n_train=int(split_statistics["train"]["interactions"]),
        n_validation=int(split_statistics["validation"]["interactions"]),
        n_test=int(split_statistics["test"]["interactions"]),
    )
    k = ks[0]
    als_note = (
        f" | ALS {metrics[f'als_recall@{k}']:.4f} / {metrics[f'als_ndcg@{k}']:.4f}" if als else ""
    )
    logger.info(
        "test AUC %s; recall@%d / ndcg@%d: two-tower %.4f / %.4f | popularity %.4f / %.4f%s",
        f"{metrics['test_auc']:.4f}" if "test_auc" in metrics else "-",
        k,
        k,
        metrics[f"recall@{k}"],
        metrics[f"ndcg@{k}"],
        metrics[f"popularity_recall@{k}"],
        metrics[f"popularity_ndcg@{k}"],
        als_note,
    )
    mlflow_metrics, run_tags = metrics_and_tags(
        metrics,
        tag_keys=RUN_DESCRIPTION_KEYS | {"als_rank", "als_reg_param", "als_alpha", "als_max_iter"},
    )
    more = {_ALS_NAME: als_baseline["test"]} if als else None
    figure = metrics_at_k_figure(model_metrics, baseline, ks, more_baselines=more)
    return metrics, mlflow_metrics, run_tags, figure
