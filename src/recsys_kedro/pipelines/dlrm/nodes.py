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

from recsys_kedro.data import criteo
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
from recsys_kedro.params import DLRM_CONF, click_log_source, click_log_spec, criteo_layout
from recsys_kedro.reporting import metrics_and_tags
from recsys_kedro.spark import active_spark_session
from recsys_kedro.training.ranking import RankingSpec
from recsys_kedro.training.specs import spec_to_dict

logger = logging.getLogger(__name__)

CONF_FILE = DLRM_CONF
SPLITS = ("train", "validation", "test")


def read_click_logs(raw_click_logs: DataFrame | None, data_params: dict[str, Any]) -> DataFrame:
    """The click logs ``dlrm.data.source`` names, each row with its ``row_id``:

    * ``generator``: synthetic logs whose labels come from a planted model (see
      :mod:`recsys_kedro.data.click_logs`), generated in parallel across Spark partitions;
      ``dense_*`` float, ``sparse_*`` long (array<long> for multi-hot features), ``label`` and
      ``p_true`` (the planted click probability);
    * ``criteo``: the catalog's ``dlrm.raw_click_logs`` in the Criteo layout, checked and put
      in time order (``row_id``); values still raw (:mod:`recsys_kedro.data.criteo`).
    """
    if click_log_source(data_params) == "generator":
        spec = click_log_spec(data_params)
        return _generate(active_spark_session(), spec, int(data_params.get("num_partitions", 4)))
    layout = criteo_layout(data_params)
    if raw_click_logs is None:
        raise ValueError(
            "dlrm.data.source is criteo, but the catalog entry dlrm.raw_click_logs finds no "
            "files or table: point its filepath (or table) at the click logs in "
            "conf/local/catalog.yml"
        )
    source = "dlrm.raw_click_logs"
    try:
        if set(raw_click_logs.columns) == {"value", "_file"}:  # tab-separated lines
            fields = criteo.split_lines(raw_click_logs, layout, source)
        else:
            fields = criteo.select_columns(raw_click_logs, layout, source)
        ordered = criteo.ordered_row_ids(fields, layout.order_by)
        return criteo.parse_values(ordered, layout, source)
    except criteo.ClickLogError as exc:
        raise ValueError(f"{exc} (dlrm.data.criteo in {CONF_FILE})") from exc


def split_click_logs(
    click_logs: DataFrame, data_params: dict[str, Any]
) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame]:
    """Train / validation / test, and the categorical vocabularies (``feature, token, index,
    count``; empty for the generator, whose ids are indexes already).

    The generator's rows are split by a seeded hash of the row id (``dlrm.data.split``);
    click logs by time (``dlrm.data.criteo.fractions``: the last rows are the test), then
    encoded with vocabularies built from the train rows only.
    """
    if click_log_source(data_params) == "generator":
        split = data_params.get("split", {})
        try:
            parts = _split(
                click_logs,
                fractions=tuple(split.get("fractions", (0.8, 0.1, 0.1))),
                seed=int(split.get("seed", 0)),
            )
        except ValueError as exc:
            raise ValueError(f"dlrm.data.split: {exc} (in {CONF_FILE})") from exc
        return (*parts, criteo.empty_vocabularies(click_logs.sparkSession))
    layout = criteo_layout(data_params)
    try:
        train, validation, test = criteo.time_split(click_logs, layout)
    except criteo.ClickLogError as exc:
        raise ValueError(f"dlrm.data.criteo: {exc} (in {CONF_FILE})") from exc
    # Cached: every feature's join of every split reads it (built once, not 3 x 26 times).
    vocabularies = criteo.build_vocabularies(train, layout).cache()
    return (
        *(criteo.encode(part, vocabularies, layout) for part in (train, validation, test)),
        vocabularies,
    )


def _layout(vocabularies: DataFrame, data_params: dict[str, Any]) -> dict[str, Any]:
    """The features the model is built from: the generator's, or the click logs' (their
    sizes from the vocabularies)."""
    source = click_log_source(data_params)
    if source == "generator":
        spec = click_log_spec(data_params)
        dense, sparse, jagged = spec.dense_columns, spec.sparse_columns, spec.jagged_columns
        sizes = spec.cardinalities
    else:
        layout = criteo_layout(data_params)
        dense, sparse, jagged = layout.dense_columns, layout.sparse_columns, ()
        sizes = criteo.cardinalities(vocabularies, layout)
        logger.info(
            "vocabularies of the train rows: %s tokens per feature (+1 for unknown)",
            ", ".join(str(n - 1) for n in sizes),
        )
    return {
        "source": source,
        "num_dense": len(dense),
        "dense_features": list(dense),
        "sparse_features": list(sparse),
        "jagged_features": list(jagged),
        "cardinalities": [int(c) for c in sizes],
    }


def summarise_click_logs(
    train: DataFrame,
    validation: DataFrame,
    test: DataFrame,
    vocabularies: DataFrame,
    data_params: dict[str, Any],
) -> dict[str, Any]:
    """Rows and positive rate per split (and the mean planted probability where there is one),
    aggregates only, and the feature layout the model is built from.

    Raises:
        ValueError: if a split is empty or holds a single class (AUC would be undefined).
    """
    out = _layout(vocabularies, data_params)
    fix = (
        "raise dlrm.data.generator.rows or change dlrm.data.split.fractions"
        if out["source"] == "generator"
        else "give dlrm.raw_click_logs more rows or change dlrm.data.criteo.fractions"
    )
    for name, frame in zip(SPLITS, (train, validation, test), strict=True):
        aggregates = [F.count("*").alias("rows"), F.sum("label").alias("positives")]
        if "p_true" in frame.columns:
            aggregates.append(F.avg("p_true").alias("mean_p_true"))
        row = frame.agg(*aggregates).first().asDict()
        rows, positives = int(row["rows"]), int(row["positives"] or 0)
        if rows == 0 or positives in (0, rows):
            raise ValueError(
                f"the {name} split has {rows} rows and {positives} positives: {fix} in {CONF_FILE}"
            )
        out[name] = {"rows": rows, "positive_rate": positives / rows}
        if row.get("mean_p_true") is not None:
            out[name]["mean_p_true"] = float(row["mean_p_true"])
    logger.info(
        "click logs (%s): %s rows (train/validation/test), positive rate %.3f",
        out["source"],
        "/".join(f"{out[s]['rows']:,}" for s in SPLITS),
        out["train"]["positive_rate"],
    )
    return out


def dlrm_spec(data_statistics: dict[str, Any], model_params: dict[str, Any]) -> dict[str, Any]:
    """The ranking model's spec: features from the data stage's layout (the generator's, or
    the click logs' vocabularies), architecture from ``dlrm.model``."""
    try:
        config = RankingConfig(
            dense_features=tuple(data_statistics["dense_features"]),
            sparse_features=tuple(data_statistics["sparse_features"]),
            cardinalities=tuple(data_statistics["cardinalities"]),
            jagged_features=tuple(data_statistics["jagged_features"]),
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
    """Test AUC / log loss of the model and of a logistic regression on the dense and the
    (hashed one-hot) categorical features, its regularisation chosen on validation (the
    floor), with DeLong intervals of the paired differences; where the rows carry a planted
    probability (the generator), also the oracle's, ``auc_ratio = test_auc / oracle_auc`` and
    ``auc_lift_ratio`` on the scale that starts at chance, each beside its validation
    counterpart (the kept epoch's).

    Returns:
        The metrics dictionary (``dlrm_metrics.json``), its quality numbers for MLflow
        metrics, its counts and settings for MLflow tags, and a plot of validation AUC per
        epoch (against the oracle's validation AUC where there is one).
    """
    ranker = model_from_file(model)
    config = ranker.config
    p_model = score_frame(ranker, test)
    labels = test["label"].to_numpy()
    ours = ranking_metrics(labels, p_model)
    seed = int(params.get("seed", 0))
    dense, sparse = list(config.dense_features), list(config.sparse_features)
    grid = tuple(float(c) for c in params.get("floor_c_grid") or FLOOR_C_GRID)
    p_floor, chosen = logistic_regression_floor(
        train, validation, test, dense, sparse, seed, c_grid=grid
    )
    floor = ranking_metrics(labels, p_floor)
    p_dense = logistic_regression_scores(train, test, dense, seed)
    dense_only = ranking_metrics(labels, p_dense)
    history = training_summary["history"]
    best_epoch = int(training_summary["best_epoch"])
    val_auc = float(history["val_auc"][best_epoch - 1])
    metrics: dict[str, Any] = {
        "test_auc": ours["auc"],
        "test_logloss": ours["logloss"],
        "val_auc": val_auc,
        "logreg_auc": floor["auc"],
        "logreg_logloss": floor["logloss"],
        "logreg_C": chosen["C"],
        "logreg_dense_only_auc": dense_only["auc"],
        # DeLong 95 % intervals of the paired AUC differences on the test rows
        "minus_logreg_auc_ci95": list(paired_auc_interval(labels, p_model, p_floor)),
        "minus_logreg_dense_only_auc_ci95": list(paired_auc_interval(labels, p_model, p_dense)),
    }
    references: dict[str, tuple[str, float]] = {}
    planted = "p_true" in test.columns
    if planted:
        oracle = ranking_metrics(labels, test["p_true"].to_numpy())
        # Validation: the kept epoch's AUC (what chose it) against the oracle's on the same rows.
        oracle_val = ranking_metrics(
            validation["label"].to_numpy(), validation["p_true"].to_numpy()
        )
        metrics |= {
            "oracle_auc": oracle["auc"],
            "oracle_logloss": oracle["logloss"],
            "auc_ratio": ours["auc"] / oracle["auc"],
            # the same ratio on the scale that starts at chance (AUC 0.5): the share of the
            # oracle's lift over a coin that the model reaches
            "auc_lift_ratio": _lift(ours["auc"], oracle["auc"]),
            "val_oracle_auc": oracle_val["auc"],
            "val_auc_ratio": val_auc / oracle_val["auc"],
            "val_auc_lift_ratio": _lift(val_auc, oracle_val["auc"]),
            "logreg_auc_lift_ratio": _lift(floor["auc"], oracle["auc"]),
            "minus_oracle_auc_ci95": list(
                paired_auc_interval(labels, p_model, test["p_true"].to_numpy())
            ),
        }
        references = {
            "auc": ("oracle", oracle_val["auc"]),
            "loss": ("oracle log loss", oracle_val["logloss"]),
        }
    metrics |= {
        "architecture": config.architecture,
        "train_samples_per_s": float(training_summary["train_samples_per_s"]),
        "best_epoch": best_epoch,
        "epochs": int(training_summary["epochs"]),
        "world_size": int(training_summary["world_size"]),
        "n_train": len(train),
        "n_validation": len(validation),
        "n_test": len(test),
        "test_positive_rate": float(labels.mean()),
    }
    logger.info(
        "dlrm (%s) test: AUC %.4f%s | logistic regression %.4f (dense only %.4f) | log loss %.4f",
        config.architecture,
        metrics["test_auc"],
        f" (oracle {metrics['oracle_auc']:.4f}, lift ratio {metrics['auc_lift_ratio']:.3f})"
        if planted
        else "",
        metrics["logreg_auc"],
        metrics["logreg_dense_only_auc"],
        metrics["test_logloss"],
    )
    mlflow_metrics, run_tags = metrics_and_tags(metrics)
    figure = training_curves_figure(
        {
            "val_auc": history["val_auc"],
            "train_loss": history["train_loss"],
            "val_loss": history["val_loss"],
        },  # fmt: skip
        best_epoch=metrics["best_epoch"],
        references=references,
        title=f"DLRM ({config.architecture}): validation"
        + (" against the planted optimum" if planted else ""),
    )
    return metrics, mlflow_metrics, run_tags, figure


__all__ = [
    "click_log_spec",
    "dlrm_spec",
    "evaluate_ranking",
    "read_click_logs",
    "split_click_logs",
    "summarise_click_logs",
]
