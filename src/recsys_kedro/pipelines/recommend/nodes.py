"""recommend: two-tower retrieval -> candidate lists -> DLRM ranker -> top K, and its report.

The ranker learns from the distribution it ranks: lists of retrieval candidates.

* **fit / holdout lists**: for every user with validation-period positives, its top N
  candidates from the two-tower model (trained on the train split; the user's train items
  excluded), label 1 where the candidate is a validation positive. A seeded share of these
  users (``holdout``) stops the ranker's training.
* **serve lists**: every user's top N with train and validation items excluded; the test
  positives label them, so the test evaluation scores exactly what would be served.

Nodes are thin: the index and list logic is :mod:`recsys_kedro.retrieval`, the features
:mod:`recsys_kedro.data.side_features`, the metrics :mod:`recsys_kedro.evaluation`.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_kedro.data import side_features as sf
from recsys_kedro.data.feature_schema import report_layout
from recsys_kedro.evaluation.lists import list_metrics, rank_lists
from recsys_kedro.evaluation.plots import metrics_at_k_figure
from recsys_kedro.evaluation.ranking import logistic_regression_scores
from recsys_kedro.evaluation.retrieval import (
    auc,
    embedding_matrix,
    embedding_score_fn,
    full_catalogue_topk_metrics,
    paired_intervals,
    popularity_score_fn,
)
from recsys_kedro.models import two_tower as two_tower_model
from recsys_kedro.models.ranking import RankingConfig, model_from_file, score_frame
from recsys_kedro.params import feature_schema
from recsys_kedro.reporting import metrics_and_tags
from recsys_kedro.retrieval import IndexConfig, build_index, recall_vs_exact, search
from recsys_kedro.retrieval.candidates import (
    candidate_lists,
    exclusions_by_user,
    label_pairs,
    score_pairs,
    split_users,
)
from recsys_kedro.training.ranking import RankingSpec
from recsys_kedro.training.run import TrainSettings, train
from recsys_kedro.training.specs import spec_from_dict, spec_to_dict

logger = logging.getLogger(__name__)

CONF_FILE = "conf/base/parameters_recommend.yml"

LISTS = ("fit", "holdout", "serve")
#: The ranker's first dense features: the retrieval stage's view (the schema's follow).
RETRIEVAL_DENSE = ("retrieval_score", "retrieval_log_rank")


def _positives(split: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    positive = split["label"].to_numpy() == 1
    return (
        split["user_idx"].to_numpy(np.int64)[positive],
        split["item_idx"].to_numpy(np.int64)[positive],
    )


# --------------------------------------------------------------------------- retrieval


def build_retrieval_index(item_embeddings: pd.DataFrame, params: dict[str, Any]):
    """A FAISS inner-product index over the two-tower's item embeddings.

    Args:
        item_embeddings: ``item_idx, embedding`` (``two_tower.item_embeddings``' form).
        params: ``recommend.retrieval.index``: ``kind`` (``exact`` | ``ivf`` | ``hnsw``)
            and its settings (:class:`recsys_kedro.retrieval.IndexConfig`).
    """
    try:
        config = IndexConfig.from_params(params)
    except ValueError as exc:
        raise ValueError(f"recommend.retrieval.index: {exc} (in {CONF_FILE})") from exc
    return build_index(embedding_matrix(item_embeddings, "item_idx"), config)


def retrieve_candidates(
    user_embeddings: pd.DataFrame,
    item_embeddings: pd.DataFrame,
    retrieval_index: Any,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    test: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The fit, holdout and serve lists (see the module docstring), and a report.

    Args:
        user_embeddings, item_embeddings: the two-tower's, ``<entity>_idx, embedding``.
        retrieval_index: :func:`build_retrieval_index`'s index.
        train, validation, test: the two-tower's splits (``user_idx, item_idx, label``).
        params: ``n_candidates`` (N), ``holdout_fraction``, ``seed`` and ``index`` (its
            ``kind`` decides whether the approximate index is compared with exact search).

    Returns:
        ``user_idx, item_idx, retrieval_score, retrieval_rank, label, list`` and the report:
        list sizes, positive rates, and ``ann_recall_vs_exact`` (the share of the exact
        top N that the index returns, on the serve lists; 1.0 for the exact index).
    """
    n = int(params["n_candidates"])
    if n < 1:
        raise ValueError(f"recommend.retrieval.n_candidates must be >= 1, got {n} ({CONF_FILE})")
    users = embedding_matrix(user_embeddings, "user_idx")
    train_u, train_i = train["user_idx"].to_numpy(np.int64), train["item_idx"].to_numpy(np.int64)
    val_u = validation["user_idx"].to_numpy(np.int64)
    val_i = validation["item_idx"].to_numpy(np.int64)
    val_pos_u, val_pos_i = _positives(validation)
    test_pos_u, test_pos_i = _positives(test)
    if val_pos_u.size == 0:
        raise ValueError(
            "the validation split has no positive interaction: the ranker's training lists "
            "are labelled by them (two_tower.features.split in conf/base/parameters_two_tower.yml)"
        )

    # Lists for the validation period: what retrieval proposes after the train period.
    fit_users = np.unique(val_pos_u)
    fit = candidate_lists(retrieval_index, users, fit_users, n, train_u, train_i)
    fit["label"] = label_pairs(fit["user_idx"], fit["item_idx"], val_pos_u, val_pos_i)
    held = split_users(fit_users, float(params["holdout_fraction"]), int(params["seed"]))
    fit["list"] = np.where(np.isin(fit["user_idx"], held), "holdout", "fit")

    # Lists for the test period: every user, train and validation items excluded.
    seen_u, seen_i = np.concatenate([train_u, val_u]), np.concatenate([train_i, val_i])
    serve_users = np.arange(len(users), dtype=np.int64)
    serve = candidate_lists(retrieval_index, users, serve_users, n, seen_u, seen_i)
    serve["label"] = label_pairs(serve["user_idx"], serve["item_idx"], test_pos_u, test_pos_i)
    serve["list"] = "serve"

    index_config = IndexConfig.from_params(params.get("index") or {})
    if index_config.kind == "exact":
        ann_recall = 1.0
    else:
        exact = build_index(embedding_matrix(item_embeddings, "item_idx"), IndexConfig())
        excluded = exclusions_by_user(seen_u, seen_i, serve_users)
        _, exact_items = search(exact, users[serve_users], n, excluded)
        _, approx_items = search(retrieval_index, users[serve_users], n, excluded)
        ann_recall = recall_vs_exact(approx_items, exact_items)
    candidates = pd.concat([fit, serve], ignore_index=True)
    report: dict[str, Any] = {
        "index_kind": index_config.kind,
        "n_candidates": n,
        "ann_recall_vs_exact": float(ann_recall),
    }
    for name in LISTS:
        rows = candidates[candidates["list"] == name]
        report[f"{name}_users"] = int(rows["user_idx"].nunique())
        report[f"{name}_rows"] = len(rows)
        report[f"{name}_positive_rate"] = float(rows["label"].mean()) if len(rows) else 0.0
    logger.info(
        "recommend: %d candidates for %d fit, %d holdout and %d serve users (%s index, "
        "recall vs exact %.3f); fit positive rate %.3f",
        n,
        report["fit_users"],
        report["holdout_users"],
        report["serve_users"],
        index_config.kind,
        ann_recall,
        report["fit_positive_rate"],
    )
    return candidates, report


def rated_pair_rows(
    user_embeddings: pd.DataFrame,
    item_embeddings: pd.DataFrame,
    train: pd.DataFrame,
    validation: pd.DataFrame,
) -> pd.DataFrame:
    """The ablation's training rows: the logged rated pairs, not candidate lists.

    The train split's pairs (``list`` = ``fit``) and the validation split's (``holdout``,
    the early stop), labelled by the rating threshold, with the same retrieval features as
    a candidate (the two-tower's score of the pair and the item's rank in the user's
    full-catalogue ranking). A ranker trained on them learns "liked, given rated".
    """
    users = embedding_matrix(user_embeddings, "user_idx")
    items = embedding_matrix(item_embeddings, "item_idx")
    parts = []
    for name, split in (("fit", train), ("holdout", validation)):
        u, i = split["user_idx"].to_numpy(np.int64), split["item_idx"].to_numpy(np.int64)
        scores, ranks = score_pairs(users, items, u, i)
        parts.append(
            pd.DataFrame(
                {
                    "user_idx": u,
                    "item_idx": i,
                    "retrieval_score": scores,
                    "retrieval_rank": ranks,
                    "label": split["label"].to_numpy(np.int32),
                    "list": name,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- features (Spark)


def build_side_statistics(
    train: DataFrame,
    user_index: DataFrame,
    item_index: DataFrame,
    item_profiles: DataFrame,
    user_report: dict[str, Any],
    item_report: dict[str, Any],
    schema: dict[str, Any],
) -> tuple[DataFrame, DataFrame, dict[str, Any]]:
    """Per-user and per-item statistics of the **train split only** (mean ratings only
    where the data have ratings), and the feature summary: every sparse feature's
    cardinality, the ranker's layout and the side tables' coverage."""
    parsed = feature_schema(schema)
    ratings = sf.train_has_ratings(train)
    layout = report_layout(parsed, user_report, item_report, ratings=ratings)
    cards = dict(layout.cardinalities)
    shares = {feature: cards[feature] for _, feature, _ in layout.affinities}
    users = sf.user_statistics(
        train,
        user_index,
        item_profiles,
        shares,
        ratings=ratings,
        prior_weight=parsed.user_prior_weight,
    )
    items = sf.item_statistics(
        train, item_index, ratings=ratings, prior_weight=parsed.item_prior_weight
    )
    summary = {
        "cardinalities": cards,
        "layout": layout.to_dict(),
        "coverage": {"users": user_report["coverage"], "items": item_report["coverage"]},
    }
    return users, items, summary


def _layout(feature_summary: dict[str, Any]) -> sf.FeatureLayout:
    if "layout" not in feature_summary:
        raise ValueError(
            "feature_summary has no layout (written by an older run): re-run the features "
            "stage (`kedro run --pipelines=recommend --namespaces=recommend`)"
        )
    return sf.FeatureLayout.from_dict(feature_summary["layout"])


def build_ranker_lists(
    candidates: DataFrame,
    user_profiles: DataFrame,
    item_profiles: DataFrame,
    user_stats: DataFrame,
    item_stats: DataFrame,
    feature_summary: dict[str, Any],
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """The ranker's rows, one per candidate: the fit lists (it learns from them), the holdout
    lists (they choose its epoch) and the serve lists (what it re-orders for every user)."""
    tables = (user_profiles, item_profiles, user_stats, item_stats)
    return _ranker_splits(candidates, *tables, _layout(feature_summary), LISTS)


def build_rated_pair_splits(
    rated_pairs: DataFrame,
    user_profiles: DataFrame,
    item_profiles: DataFrame,
    user_stats: DataFrame,
    item_stats: DataFrame,
    feature_summary: dict[str, Any],
) -> tuple[DataFrame, DataFrame]:
    """The ablation ranker's train (rated train pairs) and validation (rated validation
    pairs) splits, with exactly the features of the candidate lists."""
    tables = (user_profiles, item_profiles, user_stats, item_stats)
    return _ranker_splits(rated_pairs, *tables, _layout(feature_summary), ("fit", "holdout"))


def _ranker_splits(
    candidates: DataFrame,
    user_profiles: DataFrame,
    item_profiles: DataFrame,
    user_stats: DataFrame,
    item_stats: DataFrame,
    layout: sf.FeatureLayout,
    lists: tuple[str, ...],
) -> tuple[DataFrame, ...]:
    rows = sf.ranker_rows(
        candidates.withColumn(
            "retrieval_log_rank", F.log1p(F.col("retrieval_rank").cast("double")).cast("float")
        ),
        user_profiles,
        item_profiles,
        user_stats,
        item_stats,
        layout,
    )
    columns = [
        F.col("label").cast("int"),
        *[F.col(c).cast("float") for c in (*RETRIEVAL_DENSE, *layout.dense_features)],
        *[
            F.col(c) if c in layout.jagged else F.col(c).cast("long")
            for c in layout.sparse_features
        ],
        F.col("retrieval_rank").cast("int"),
    ]
    return tuple(rows.where(F.col("list") == name).select(*columns) for name in lists)


def ranker_spec(
    feature_summary: dict[str, Any],
    train: pd.DataFrame,
    model_params: dict[str, Any],
    training_params: dict[str, Any],
) -> dict[str, Any]:
    """The ranker's spec: the side features' cardinalities, architecture from
    ``recommend.model`` (the ``dlrm`` pipeline's choices; with ``standardize_dense`` the
    model standardises its dense input by its train rows' mean and deviation), and how the
    epoch is chosen: ``recommend.training.monitor`` (default ``val_list_ndcg@10``, the
    holdout lists re-ordered) with ``validation.ks``."""
    validation = dict(training_params.get("validation") or {})
    selection = {
        "monitor": training_params.get("monitor", "val_list_ndcg@10"),
        "list_ks": tuple(validation.get("ks", (10,))),
        "list_key": "user_idx",
        "list_item": "item_idx",
    }
    return _ranker_spec(feature_summary, train, model_params, "recommend", selection)


def rated_pairs_spec(
    feature_summary: dict[str, Any], train: pd.DataFrame, model_params: dict[str, Any]
) -> dict[str, Any]:
    """The ablation ranker: the same model as :func:`ranker_spec`, trained pointwise on
    rated pairs and stopped by validation AUC on rated pairs (no lists to re-order)."""
    selection = {"monitor": "val_auc"}
    return _ranker_spec(feature_summary, train, model_params, "recommend.rated_pairs", selection)


def _ranker_spec(
    feature_summary: dict[str, Any],
    train: pd.DataFrame,
    model_params: dict[str, Any],
    name: str,
    selection: dict[str, Any],
) -> dict[str, Any]:
    layout = _layout(feature_summary)
    dense_features = (*RETRIEVAL_DENSE, *layout.dense_features)
    params = dict(model_params)
    scaling: dict[str, Any] = {}
    if params.pop("standardize_dense", False):
        if len(train) == 0:
            raise ValueError(
                "the ranker's train split is empty: no user has validation positives "
                "(two_tower.features.split in conf/base/parameters_two_tower.yml)"
            )
        dense = train[list(dense_features)].to_numpy(np.float64)
        std = dense.std(axis=0)
        scaling = {
            "dense_mean": tuple(dense.mean(axis=0).tolist()),
            "dense_std": tuple(np.where(std > 1e-12, std, 1.0).tolist()),  # constant: as is
        }
    try:
        config = RankingConfig(
            dense_features=dense_features,
            sparse_features=layout.sparse_features,
            cardinalities=tuple(int(layout.cardinalities[c]) for c in layout.sparse_features),
            jagged_features=layout.jagged,
            **scaling,
            **params,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"recommend.model: {exc} (in {CONF_FILE})") from exc
    try:
        spec = RankingSpec(model=config, name=name, **selection)
    except ValueError as exc:
        raise ValueError(f"recommend.training: {exc} (in {CONF_FILE})") from exc
    return spec_to_dict(spec)


# --------------------------------------------------------------------------- rerank + report


def _relevant(
    test: pd.DataFrame, train: pd.DataFrame, validation: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Test positives a recommender can still show: not already seen in train/validation."""
    users, items = _positives(test)
    seen = pd.concat([train[["user_idx", "item_idx"]], validation[["user_idx", "item_idx"]]])
    seen_flag = label_pairs(users, items, seen["user_idx"], seen["item_idx"]).astype(bool)
    return users[~seen_flag], items[~seen_flag]


def _holdout_metrics(
    ranker: Any,
    rated_pairs_ranker: Any,
    fit_lists: pd.DataFrame,
    holdout_lists: pd.DataFrame,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    ks: list[int],
    seed: int,
) -> dict[str, float]:
    """``val_*``: the same comparison on the holdout lists (validation positives of users
    the ranker never trained on): what hyperparameters are chosen by, never test."""
    users = np.unique(holdout_lists["user_idx"].to_numpy(np.int64))
    pos_u, pos_i = _positives(validation)
    seen = label_pairs(pos_u, pos_i, train["user_idx"], train["item_idx"]).astype(bool)
    keep = np.isin(pos_u, users) & ~seen
    rel_u, rel_i = pos_u[keep], pos_i[keep]
    u = holdout_lists["user_idx"].to_numpy(np.int64)
    i = holdout_lists["item_idx"].to_numpy(np.int64)
    scores = {
        "retrieval": holdout_lists["retrieval_score"].to_numpy(),
        "rerank": score_frame(ranker, holdout_lists),
        "rated_pairs_rerank": score_frame(rated_pairs_ranker, holdout_lists),
        "logreg_rerank": logistic_regression_scores(
            fit_lists, holdout_lists, list(ranker.config.dense_features), seed
        ),
    }
    out: dict[str, float] = {}
    for name, values in scores.items():
        got = list_metrics(u, i, values, rel_u, rel_i, ks)
        for k in ks:
            out[f"val_{name}_recall@{k}"] = float(got[f"recall@{k}"])
            out[f"val_{name}_ndcg@{k}"] = float(got[f"ndcg@{k}"])
    return out


def rerank_and_evaluate(
    model: dict[str, Any],
    rated_pairs_model: dict[str, Any],
    fit_lists: pd.DataFrame,
    holdout_lists: pd.DataFrame,
    serve_lists: pd.DataFrame,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    test: pd.DataFrame,
    user_index: pd.DataFrame,
    item_index: pd.DataFrame,
    retrieval_report: dict[str, Any],
    training_summary: dict[str, Any],
    refit_report: dict[str, Any],
    params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, dict[str, float]], dict[str, Any], Figure]:
    """Rerank the serve lists with the ranker, write each user's top K, and score the funnel.

    Metrics on the test positives not seen before (train/validation items excluded):
    ``retrieval_*`` ranks the lists by the two-tower's score, ``rerank_*`` by the ranker's,
    ``logreg_rerank_*`` by a logistic regression on the same dense features fitted on the
    same fit lists, ``rated_pairs_rerank_*`` by the same ranker trained pointwise on the
    train split's rated pairs (the ablation that shows why the ranker learns from lists; left
    out when every train pair is a positive, one class),
    ``popularity_*`` is the full-catalogue most-popular baseline, ``refit_retrieval_*`` the
    full-catalogue order of the two-tower refit on train + validation
    (:func:`refit_retrieval_metrics`: the validation period the ranker learns from, seen by
    retrieval too); ``rerank_minus_<baseline>_<metric>@K_ci95`` are paired bootstrap
    intervals over the test users;
    ``ranker_test_auc`` is the ranker's AUC over the serve rows of evaluated users. The
    ``val_*`` keys make the same comparison on the holdout lists (choose settings by them).

    Returns:
        The top K per user (original ids), the metrics (``recommend_metrics.json``), its
        MLflow metrics and tags, and the metric-at-K plot.
    """
    ks = sorted({int(k) for k in params["ks"]})
    top_k = int(params["top_k"])
    ranker = model_from_file(model)
    rated_pairs_ranker = model_from_file(rated_pairs_model)
    serve = serve_lists.copy()
    serve["ranker_score"] = score_frame(ranker, serve)
    serve["rated_pairs_score"] = score_frame(rated_pairs_ranker, serve)
    serve["logreg_score"] = logistic_regression_scores(
        fit_lists, serve, list(ranker.config.dense_features), int(params.get("seed", 0))
    )
    rel_u, rel_i = _relevant(test, train, validation)
    u, i = serve["user_idx"].to_numpy(np.int64), serve["item_idx"].to_numpy(np.int64)
    retrieval, rerank, logreg, rated_pairs = (
        list_metrics(u, i, serve[column], rel_u, rel_i, ks, per_user=True)
        for column in ("retrieval_score", "ranker_score", "logreg_score", "rated_pairs_score")
    )
    train_u, train_i = train["user_idx"].to_numpy(np.int64), train["item_idx"].to_numpy(np.int64)
    seen_u = np.concatenate([train_u, validation["user_idx"].to_numpy(np.int64)])
    seen_i = np.concatenate([train_i, validation["item_idx"].to_numpy(np.int64)])
    pos_train_items = train_i[train["label"].to_numpy() == 1]
    popularity = full_catalogue_topk_metrics(
        popularity_score_fn(pos_train_items, len(item_index)),
        len(item_index),
        rel_u,
        rel_i,
        seen_u,
        seen_i,
        ks=ks,
        per_user=True,
    )
    evaluated = np.isin(u, np.unique(rel_u))
    labels = serve["label"].to_numpy()[evaluated]
    metrics: dict[str, Any] = {}
    for name, values in (
        ("retrieval", retrieval),
        ("rerank", rerank),
        ("logreg_rerank", logreg),
        ("rated_pairs_rerank", rated_pairs),
        ("popularity", popularity),
        ("refit_retrieval", refit_report),
    ):
        for k in ks:
            metrics[f"{name}_recall@{k}"] = float(values[f"recall@{k}"])
            metrics[f"{name}_ndcg@{k}"] = float(values[f"ndcg@{k}"])
    # Paired bootstrap intervals over the test users: the reranked lists minus each baseline.
    for name, values in (
        ("retrieval", retrieval),
        ("logreg_rerank", logreg),
        ("rated_pairs_rerank", rated_pairs),
        ("popularity", popularity),
        ("refit_retrieval", refit_report),
    ):
        intervals = paired_intervals(rerank["per_user"], values["per_user"], name, ks)
        metrics.update({f"rerank_{key}": value for key, value in intervals.items()})
    metrics.update(
        _holdout_metrics(
            ranker,
            rated_pairs_ranker,
            fit_lists,
            holdout_lists,
            train,
            validation,
            ks,
            int(params.get("seed", 0)),
        )
    )
    one_class = train["label"].nunique() < 2
    if one_class:
        # An implicit log whose every kept pair is a positive: the ablation trained on one
        # class, so its figures would mean nothing.
        logger.warning(
            "recommend: every train pair has label %s, so the rated-pairs ablation learned "
            "one class; its metrics are left out",
            train["label"].iloc[0] if len(train) else None,
        )
        metrics = {k: v for k, v in metrics.items() if "rated_pairs" not in k}
    metrics["ranker_test_auc"] = auc(labels, serve["ranker_score"].to_numpy()[evaluated])
    metrics["logreg_test_auc"] = auc(labels, serve["logreg_score"].to_numpy()[evaluated])
    metrics["ann_recall_vs_exact"] = float(retrieval_report["ann_recall_vs_exact"])
    metrics.update(
        {
            "architecture": ranker.config.architecture,
            "n_eval_users": int(retrieval["n_users"]),
            "n_candidates": int(retrieval_report["n_candidates"]),
            "best_epoch": int(training_summary["best_epoch"]),
            "epochs": int(training_summary["epochs"]),
            "world_size": int(training_summary["world_size"]),
            "n_train": len(fit_lists),
            "n_test": len(serve),
        }
    )
    logger.info(
        "recommend test: NDCG@10 retrieval %.4f -> rerank %.4f (logreg %.4f, popularity %.4f); "
        "rated pairs %.4f; ranker AUC %.4f; holdout lists: retrieval %.4f -> rerank %.4f "
        "(logreg %.4f)",
        metrics.get("retrieval_ndcg@10", float("nan")),
        metrics.get("rerank_ndcg@10", float("nan")),
        metrics.get("logreg_rerank_ndcg@10", float("nan")),
        metrics.get("popularity_ndcg@10", float("nan")),
        metrics.get("rated_pairs_rerank_ndcg@10", float("nan")),
        metrics["ranker_test_auc"],
        metrics.get("val_retrieval_ndcg@10", float("nan")),
        metrics.get("val_rerank_ndcg@10", float("nan")),
        metrics.get("val_logreg_rerank_ndcg@10", float("nan")),
    )
    recommendations = top_k_table(serve, user_index, item_index, top_k)
    test_part = {k: v for k, v in metrics.items() if not k.startswith("val_")}
    mlflow_metrics, run_tags = metrics_and_tags(test_part, tag_keys={*RUN_TAGS}, prefix="test_")
    val_part = {k: v for k, v in metrics.items() if k.startswith("val_")}
    mlflow_metrics.update(metrics_and_tags(val_part, tag_keys=(), prefix="val_")[0])
    figure = metrics_at_k_figure(
        rerank,
        retrieval,
        ks,
        model_name="two-tower + ranker",
        baseline_name="two-tower retrieval",
        more_baselines={
            "logistic regression rerank": logreg,
            **({} if one_class else {"ranker trained on rated pairs": rated_pairs}),
            "two-tower refit on train + validation": refit_report,
            "most popular": popularity,
        },
    )
    return recommendations, metrics, mlflow_metrics, run_tags, figure


RUN_TAGS = (
    "architecture",
    "n_eval_users",
    "n_candidates",
    "best_epoch",
    "epochs",
    "world_size",
    "n_train",
    "n_test",
)


# --------------------------------------------------------------------------------------
# the refit baseline: the two-tower trained again on train + validation
# --------------------------------------------------------------------------------------


def refit_rows(train: DataFrame, validation: DataFrame) -> DataFrame:
    """The two-tower's train and validation rows together: the refit learns from the
    validation period too, as the ranker (whose labels come from it) does."""
    return train.unionByName(validation)


def refit_settings(
    model_spec: dict[str, Any], training_params: dict[str, Any], training_summary: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The refit's spec (the two-tower's, named ``recommend.refit``, keeping its last epoch:
    no period is left to choose one by) and settings (the two-tower's, for as many epochs
    as its run kept, no early stop)."""
    spec = copy.deepcopy(model_spec)
    # No retrieval validation: the validation period is part of its training data.
    spec["spec"].update(name="recommend.refit", monitor=None, validate_retrieval=False)
    params = {**training_params, "epochs": int(training_summary["best_epoch"]), "patience": None}
    return spec, params


def refit_two_tower(
    train_mds: Any,
    validation_mds: Any,
    model_spec: dict[str, Any],
    training_params: dict[str, Any],
    launch_params: dict[str, Any],
    training_summary: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train the refit (:func:`refit_settings`) on train + validation; its model file and
    training summary. No resume checkpoints (a short run of a baseline)."""
    spec, params = refit_settings(model_spec, training_params, training_summary)
    settings = TrainSettings.from_params(params, {**launch_params, "checkpoints": None})
    result = train(spec_from_dict(spec), spec, train_mds, validation_mds, settings)
    return result.model, result.summary


def refit_retrieval_metrics(
    refit_model: dict[str, Any],
    train: pd.DataFrame,
    validation: pd.DataFrame,
    test: pd.DataFrame,
    params: dict[str, Any],
) -> dict[str, Any]:
    """The refit's full-catalogue order on test, train and validation items excluded: the
    test positives the funnel is scored on, so its per-user values pair with the funnel's."""
    model = two_tower_model.model_from_file(refit_model)
    n_users, n_items = (int(refit_model["config"][k]) for k in ("num_users", "num_items"))
    user_emb = model.encode_users(torch.arange(n_users))
    item_emb = model.encode_items(torch.arange(n_items))
    rel_u, rel_i = _relevant(test, train, validation)
    seen = pd.concat([train[["user_idx", "item_idx"]], validation[["user_idx", "item_idx"]]])
    metrics = full_catalogue_topk_metrics(
        embedding_score_fn(user_emb, item_emb),
        n_items,
        rel_u,
        rel_i,
        seen["user_idx"].to_numpy(np.int64),
        seen["item_idx"].to_numpy(np.int64),
        ks=sorted({int(k) for k in params["ks"]}),
        per_user=True,
    )
    metrics["per_user"] = {k: v.tolist() for k, v in metrics["per_user"].items()}  # JSON
    return metrics


def top_k_table(
    scored: pd.DataFrame, user_index: pd.DataFrame, item_index: pd.DataFrame, k: int
) -> pd.DataFrame:
    """Each user's ``k`` best candidates by ranker score, with the original ids:
    ``user_id, item_id, rank, retrieval_score, ranker_score`` (rank 1 = best)."""
    if k < 1:
        raise ValueError(f"recommend.evaluation.top_k must be >= 1, got {k} ({CONF_FILE})")
    ranks = rank_lists(scored["user_idx"], scored["item_idx"], scored["ranker_score"])
    top = scored.loc[ranks <= k, ["user_idx", "item_idx", "retrieval_score", "ranker_score"]]
    top = top.assign(rank=ranks[ranks <= k].astype(np.int32))
    top = top.merge(user_index[["user_idx", "user_id"]], on="user_idx", how="left", validate="m:1")
    top = top.merge(item_index[["item_idx", "item_id"]], on="item_idx", how="left", validate="m:1")
    if top["user_id"].isna().any() or top["item_id"].isna().any():
        raise ValueError(
            "a recommended user_idx/item_idx has no original id: the lists and the indexes "
            "come from different runs; re-run `kedro run --pipelines=recommend`"
        )
    top = top.sort_values(["user_idx", "rank"])
    return top[["user_id", "item_id", "rank", "retrieval_score", "ranker_score"]].reset_index(
        drop=True
    )


# --------------------------------------------------------------------------- serving


def package_recommender(
    user_embeddings: pd.DataFrame,
    item_embeddings: pd.DataFrame,
    retrieval_index: Any,
    model: dict[str, Any],
    user_profiles: pd.DataFrame,
    item_profiles: pd.DataFrame,
    user_statistics: pd.DataFrame,
    item_statistics: pd.DataFrame,
    feature_summary: dict[str, Any],
    train: pd.DataFrame,
    validation: pd.DataFrame,
    retrieval_params: dict[str, Any],
    evaluation_params: dict[str, Any],
) -> tuple[Any, Any]:
    """The funnel as one MLflow pyfunc model (:class:`FunnelRecommender`), twice: for the
    model directory (``data/06_models/recommender``) and for the MLflow run.

    It serves what the batch path serves: the same index, ranker and feature tables (the
    layout of ``feature_summary``), the train and validation items excluded,
    ``n_candidates`` and ``top_k`` of the run.
    """
    from recsys_kedro.retrieval import serialize_index
    from recsys_kedro.serving.recommender import FunnelRecommender

    users = user_embeddings.sort_values("user_idx")
    items = item_embeddings.sort_values("item_idx")
    n_items = len(items)
    user_features = (
        user_profiles.merge(user_statistics, on="user_idx", validate="1:1")
        .sort_values("user_idx")
        .set_index("user_idx")
    )
    item_features = (
        item_profiles.merge(item_statistics, on="item_idx", validate="1:1")
        .sort_values("item_idx")
        .set_index("item_idx")
    )
    for name, frame, n in (("user", user_features, len(users)), ("item", item_features, n_items)):
        if len(frame) != n or (frame.index.to_numpy() != np.arange(n)).any():
            raise ValueError(
                f"the {name} feature tables do not cover the {name} index 0..{n - 1}: re-run "
                "`kedro run --pipelines=recommend` so both come from the same run"
            )
    positives = train["item_idx"].to_numpy(np.int64)[train["label"].to_numpy() == 1]
    recommender = FunnelRecommender(
        user_ids=users["user_id"].to_numpy(),
        item_ids=items["item_id"].to_numpy(),
        user_embeddings=embedding_matrix(users, "user_idx"),
        index_bytes=serialize_index(retrieval_index),
        ranker=model,
        user_features=user_features,
        item_features=item_features,
        seen_users=np.concatenate([train["user_idx"], validation["user_idx"]]),
        seen_items=np.concatenate([train["item_idx"], validation["item_idx"]]),
        item_popularity=np.bincount(positives, minlength=n_items),
        layout=feature_summary["layout"],
        n_candidates=int(retrieval_params["n_candidates"]),
        top_k=int(evaluation_params["top_k"]),
    )
    return recommender, recommender


def recommend_all_users(user_index: DataFrame, recommender: Any) -> DataFrame:
    """Every indexed user's top K, computed in Spark by the servable model (the batch
    inference path: ``mapInPandas``, the model loaded once per executor worker)."""
    from recsys_kedro.serving.batch import recommend_all

    model = (
        recommender.unwrap_python_model()
        if hasattr(recommender, "unwrap_python_model")
        else recommender
    )
    return recommend_all(user_index, model)
