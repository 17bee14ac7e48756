"""What the reporting nodes hand to kedro-mlflow: metric names MLflow accepts, and the split
of a metrics file into MLflow metrics (model quality) and run tags (counts and settings)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

#: Keys of a metrics file that describe the run rather than measure the model.
RUN_DESCRIPTION_KEYS = frozenset(
    {
        "architecture",
        "best_epoch",
        "epochs",
        "world_size",
        "n_users",
        "n_items",
        "n_train",
        "n_validation",
        "n_test",
        "n_eval_users",
        "test_positive_rate",
        "logreg_C",
    }
)


def mlflow_metric_name(key: str) -> str:
    """MLflow metric names cannot hold '@': ``val_ndcg@10`` -> ``val_ndcg_at_10``."""
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", key.replace("@", "_at_"))


def metrics_and_tags(
    metrics: Mapping[str, Any],
    *,
    tag_keys: Collection[str] = RUN_DESCRIPTION_KEYS,
    prefix: str = "test_",
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """``(MLflow metrics, run tags)`` from a flat metrics file.

    Numbers that measure the model become single-step MLflow metrics named ``<prefix><key>``
    (unless the key already starts with the prefix, or with ``val_``), MLflow-safe; an
    interval ``[low, high]`` becomes two metrics, ``<name>_low`` and ``<name>_high``; counts
    and settings
    (``tag_keys``) and any non-number become tags.
    """
    mlflow_metrics: dict[str, dict[str, float]] = {}
    tags: dict[str, Any] = {}
    for key, value in _intervals_flattened(metrics).items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if key in tag_keys or not number:
            tags[key] = value
            continue
        # validation figures keep their own name (a test_ prefix would mislabel them)
        name = key if key.startswith((prefix, "val_")) else f"{prefix}{key}"
        mlflow_metrics[mlflow_metric_name(name)] = {"step": 0, "value": float(value)}
    return mlflow_metrics, tags


def _intervals_flattened(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``{"x_ci95": [low, high]}`` -> ``{"x_ci95_low": low, "x_ci95_high": high}``."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        pair = isinstance(value, list | tuple) and len(value) == 2
        if pair and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            out[f"{key}_low"], out[f"{key}_high"] = value
        else:
            out[key] = value
    return out
