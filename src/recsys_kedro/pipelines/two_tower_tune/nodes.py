"""The tuning node: every trial is the two_tower training stage with other parameters."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from recsys_kedro.mds import MDSFolder
from recsys_kedro.params import weighted_label_rule
from recsys_kedro.training.run import TrainSettings, train
from recsys_kedro.training.specs import spec_to_dict
from recsys_kedro.training.two_tower import two_tower_spec_from_params
from recsys_kedro.tuning import (
    SearchSpace,
    apply_overrides,
    history_figure,
    nest_dotted,
    run_study,
)

logger = logging.getLogger(__name__)

_HINT = "two_tower.tune in conf/base/parameters_two_tower.yml"


def _space(tune_params: dict[str, Any]) -> SearchSpace:
    dimensions = {}
    for raw in tune_params.get("space") or []:
        dimension = dict(raw)
        name = dimension.pop("name", None)
        if not name or name in dimensions:
            raise ValueError(f"every search dimension needs a unique 'name' ({_HINT})")
        dimensions[name] = dimension
    return SearchSpace(dimensions)


def tune_two_tower(
    train_mds: MDSFolder,
    validation_mds: MDSFolder,
    split_statistics: dict[str, Any],
    item_popularity: pd.DataFrame,
    side_tables: dict[str, Any],
    model_params: dict[str, Any],
    training_params: dict[str, Any],
    launch_params: dict[str, Any],
    tune_params: dict[str, Any],
    ingestion_params: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], Figure]:
    """Search ``tune_params["space"]`` with Optuna; each trial trains the two-tower as the
    training stage does (TorchDistributor, the shared trainer; no resume checkpoints) and is
    scored by its kept epoch's validation metric (``objective``, e.g. ``val_ndcg@10``). Test
    data is never read.

    Returns:
        The study (every trial: parameters, validation metrics, state, error), the best
        parameters as a ``parameters_two_tower`` override (``{"two_tower": {...}}``, to drop
        into ``conf/local/``), and the study's history plot.
    """
    try:
        space = _space(tune_params)
        apply_overrides({"model": model_params, "training": training_params}, {
            name: None for name in space.dimensions
        })  # fmt: skip
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{exc} ({_HINT})") from exc
    weighted = weighted_label_rule(ingestion_params)  # the trials train the model two_tower trains
    metric = str(tune_params.get("objective", "val_ndcg@10"))
    base_training = dict(training_params)
    if tune_params.get("epochs") is not None:
        base_training["epochs"] = int(tune_params["epochs"])  # shorter trials

    def objective(values: dict[str, Any]) -> dict[str, float]:
        params = apply_overrides({"model": model_params, "training": base_training}, values)
        spec = two_tower_spec_from_params(
            split_statistics,
            item_popularity,
            params["model"],
            params["training"],
            side_tables,
            weighted=weighted,
        )
        settings = TrainSettings.from_params(params["training"], launch_params)
        result = train(spec, spec_to_dict(spec), train_mds, validation_mds, settings)
        summary = result.summary
        kept = int(summary["best_epoch"]) - 1
        metrics = {k: float(v[kept]) for k, v in summary["history"].items() if k.startswith("val_")}
        metrics["best_epoch"] = float(summary["best_epoch"])
        return metrics

    result = run_study(
        objective,
        space,
        metric=metric,
        direction=str(tune_params.get("direction", "maximize")),
        n_trials=int(tune_params.get("n_trials", 20)),
        timeout_s=tune_params.get("timeout_s"),
        seed=int(tune_params.get("seed", 0)),
    )
    failed = sum(t.state != "COMPLETE" for t in result.trials)
    logger.info(
        "two_tower_tune: best %s=%.4f (trial %d of %d, %d failed): %s",
        metric,
        result.best_value,
        result.best_trial,
        len(result.trials),
        failed,
        result.best_params,
    )
    best = {"two_tower": nest_dotted(result.best_params or {})}
    return result.to_dict(), best, history_figure(result)
