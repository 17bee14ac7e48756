"""dlrm-specific nodes: planted click logs in Spark, the ranking model's spec, its report.

Export and training are the shared stages; only what is specific to a ranker on click logs
lives here.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_kedro.data.click_logs import generate_click_logs as _generate
from recsys_kedro.data.click_logs import split_click_logs as _split
from recsys_kedro.evaluation.plots import training_curves_figure
from recsys_kedro.evaluation.ranking import (
    FLOOR_C_GRID,
    logistic_regression_floor,
    logistic_regression_scores,
    paired_auc_interval,
    ranking_metrics,
)
from recsys_kedro.models.ranking import RankingConfig, model_from_file, score_frame
from recsys_kedro.params import DLRM_CONF, click_log_spec
from recsys_kedro.reporting import metrics_and_tags
from recsys_kedro.spark import active_spark_session
from recsys_kedro.training.ranking import RankingSpec
from recsys_kedro.training.specs import spec_to_dict

logger = logging.getLogger(__name__)

CONF_FILE = DLRM_CONF
SPLITS = ("train", "validation", "test")


def generate_click_logs(data_params: dict[str, Any]) -> DataFrame:
    """Synthetic click logs whose labels come from a planted model (see
    :mod:`recsys_kedro.data.click_logs`), generated in parallel across Spark partitions.

    Returns:
        ``row_id``, ``dense_*`` (float), ``sparse_*`` (long, or array<long> for multi-hot
        features), ``label`` (int) and ``p_true`` (the planted click probability).
    """
    spec = click_log_spec(data_params)
    return _generate(active_spark_session(), spec, int(data_params.get("num_partitions", 4)))


def split_click_logs(
    click_logs: DataFrame, data_params: dict[str, Any]
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Train / validation / test by a seeded hash of the row id (``dlrm.data.split``)."""
    split = data_params.get("split", {})
    try:
        return _split(
            click_logs,
            fractions=tuple(split.get("fractions", (0.8, 0.1, 0.1))),
            seed=int(split.get("seed", 0)),
        )
    except ValueError as exc:
        raise ValueError(f"dlrm.data.split: {exc} (in {CONF_FILE})") from exc


def summarise_click_logs(
    train: DataFrame, validation: DataFrame, test: DataFrame, data_params: dict[str, Any]
) -> dict[str, Any]:
    """Rows, positive rate and mean planted probability per split (aggregates only), and
    the feature layout the model is built from.

    Raises:
        ValueError: if a split is empty or holds a single class (AUC would be undefined).
    """
    spec = click_log_spec(data_params)
    out: dict[str, Any] = {
        "num_dense": spec.num_dense,
        "sparse_features": list(spec.sparse_columns),
        "jagged_features": list(spec.jagged_columns),
        "cardinalities": list(spec.cardinalities),
    }
    for name, frame in zip(SPLITS, (train, validation, test), strict=True):
        row = frame.agg(
            F.count("*").alias("rows"),
            F.sum("label").alias("positives"),
            F.avg("p_true").alias("mean_p_true"),
        ).first()
        rows, positives = int(row["rows"]), int(row["positives"] or 0)
        if rows == 0 or positives in (0, rows):
            raise ValueError(
                f"the {name} split has {rows} rows and {positives} positives: raise "
                f"dlrm.data.generator.rows or change dlrm.data.split.fractions in {CONF_FILE}"
            )
        out[name] = {
            "rows": rows,
            "positive_rate": positives / rows,
            "mean_p_true": float(row["mean_p_true"]),
        }
    logger.info(
        "click logs: %s rows (train/validation/test), positive rate %.3f",
        "/".join(f"{out[s]['rows']:,}" for s in SPLITS),
        out["train"]["positive_rate"],
    )
    return out


def dlrm_spec(data_params: dict[str, Any], model_params: dict[str, Any]) -> dict[str, Any]:
    """The ranking model's spec: features from the generator, architecture from ``dlrm.model``."""
    data = click_log_spec(data_params)
    try:
        config = RankingConfig(
            dense_features=data.dense_columns,
            sparse_features=data.sparse_columns,
            cardinalities=data.cardinalities,
            jagged_features=data.jagged_columns,
            **model_params,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"dlrm.model: {exc} (in {CONF_FILE})") from exc
    return spec_to_dict(RankingSpec(model=config, name="dlrm"))


# --------------------------------------------------------------------------- report


def _lift(auc: float, oracle_auc: float) -> float:
    """``(AUC - 0.5) / (oracle AUC - 0.5)``: 0 is a coin, 1 the planted optimum."""
    return (auc - 0.5) / (oracle_auc - 0.5)


def evaluate_ranking(
    model: dict[str, Any],
    train: pd.DataFrame,
    validation: pd.DataFrame,
    test: pd.DataFrame,
    training_summary: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, dict[str, float]], dict[str, Any], Figure]:
    """Test AUC / log loss of the model, of the planted probabilities (the oracle) and of a
    logistic regression on the dense and the (hashed one-hot) categorical features, its
    regularisation chosen on validation (the floor); ``auc_ratio = test_auc / oracle_auc``
    and ``auc_lift_ratio`` on the scale that starts at chance, each beside its validation
    counterpart (the kept epoch's).

    Returns:
        The metrics dictionary (``dlrm_metrics.json``), its quality numbers for MLflow
        metrics, its counts and settings for MLflow tags, and a plot of validation AUC per
        epoch against the oracle's validation AUC.
    """
    ranker = model_from_file(model)
    config = ranker.config
    p_model = score_frame(ranker, test)
    labels = test["label"].to_numpy()
    ours = ranking_metrics(labels, p_model)
    oracle = ranking_metrics(labels, test["p_true"].to_numpy())
    seed = int(params.get("seed", 0))
    dense, sparse = list(config.dense_features), list(config.sparse_features)
    grid = tuple(float(c) for c in params.get("floor_c_grid") or FLOOR_C_GRID)
    p_floor, chosen = logistic_regression_floor(
        train, validation, test, dense, sparse, seed, c_grid=grid
    )
    floor = ranking_metrics(labels, p_floor)
    dense_only = ranking_metrics(labels, logistic_regression_scores(train, test, dense, seed))
    # Validation: the kept epoch's AUC (what chose it) against the oracle's on the same rows.
    history = training_summary["history"]
    best_epoch = int(training_summary["best_epoch"])
    oracle_val = ranking_metrics(validation["label"].to_numpy(), validation["p_true"].to_numpy())
    val_auc = float(history["val_auc"][best_epoch - 1])
    metrics: dict[str, Any] = {
        "test_auc": ours["auc"],
        "test_logloss": ours["logloss"],
        "oracle_auc": oracle["auc"],
        "oracle_logloss": oracle["logloss"],
        "auc_ratio": ours["auc"] / oracle["auc"],
        # the same ratio on the scale that starts at chance (AUC 0.5): the share of the
        # oracle's lift over a coin that the model reaches
        "auc_lift_ratio": _lift(ours["auc"], oracle["auc"]),
        "val_auc": val_auc,
        "val_oracle_auc": oracle_val["auc"],
        "val_auc_ratio": val_auc / oracle_val["auc"],
        "val_auc_lift_ratio": _lift(val_auc, oracle_val["auc"]),
        "logreg_auc": floor["auc"],
        "logreg_logloss": floor["logloss"],
        "logreg_auc_lift_ratio": _lift(floor["auc"], oracle["auc"]),
        "logreg_C": chosen["C"],
        "logreg_dense_only_auc": dense_only["auc"],
        # DeLong 95 % intervals of the paired AUC differences on the test rows
        "minus_oracle_auc_ci95": list(
            paired_auc_interval(labels, p_model, test["p_true"].to_numpy())
        ),
        "minus_logreg_auc_ci95": list(paired_auc_interval(labels, p_model, p_floor)),
        "architecture": config.architecture,
        "train_samples_per_s": float(training_summary["train_samples_per_s"]),
        "best_epoch": int(training_summary["best_epoch"]),
        "epochs": int(training_summary["epochs"]),
        "world_size": int(training_summary["world_size"]),
        "n_train": len(train),
        "n_validation": len(validation),
        "n_test": len(test),
        "test_positive_rate": float(labels.mean()),
    }
    logger.info(
        "dlrm (%s) test: AUC %.4f (oracle %.4f, ratio %.3f, lift ratio %.3f; validation %.3f) "
        "| logistic regression %.4f (lift ratio %.3f) | log loss %.4f (oracle %.4f)",
        config.architecture,
        metrics["test_auc"],
        metrics["oracle_auc"],
        metrics["auc_ratio"],
        metrics["auc_lift_ratio"],
        metrics["val_auc_ratio"],
        metrics["logreg_auc"],
        metrics["logreg_auc_lift_ratio"],
        metrics["test_logloss"],
        metrics["oracle_logloss"],
    )
    mlflow_metrics, run_tags = metrics_and_tags(metrics)
    figure = training_curves_figure(
        {
            "val_auc": history["val_auc"],
            "train_loss": history["train_loss"],
            "val_loss": history["val_loss"],
        },  # fmt: skip
        best_epoch=metrics["best_epoch"],
        references={
            "auc": ("oracle", oracle_val["auc"]),
            "loss": ("oracle log loss", oracle_val["logloss"]),
        },
        title=f"DLRM ({config.architecture}): validation against the planted optimum",
    )
    return metrics, mlflow_metrics, run_tags, figure


__all__ = [
    "click_log_spec",
    "dlrm_spec",
    "evaluate_ranking",
    "generate_click_logs",
    "split_click_logs",
    "summarise_click_logs",
]
