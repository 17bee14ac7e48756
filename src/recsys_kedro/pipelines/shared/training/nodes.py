"""Training nodes (shared by every model): train the model a spec describes, plot its curves.

The work is :func:`recsys_kedro.training.run.train`; a node turns parameters into typed
settings and adds what a Kedro user needs to fix or re-run a failure (conf file, command).
"""

from __future__ import annotations

import logging
from typing import Any

from matplotlib.figure import Figure

from recsys_kedro.evaluation.plots import training_curves_figure
from recsys_kedro.mds import MDSFolder
from recsys_kedro.reporting import mlflow_metric_name
from recsys_kedro.training.run import SettingsError, TrainingFailed, TrainSettings, train
from recsys_kedro.training.specs import spec_from_dict

logger = logging.getLogger(__name__)


def _conf_hint(name: str) -> str:
    pipeline = name.split(".", maxsplit=1)[0]
    return (
        f"`{name}.training` in conf/base/parameters_{pipeline}.yml, or `launch` in "
        "conf/<env>/parameters.yml"
    )


def train_model(
    train_mds: MDSFolder,
    validation_mds: MDSFolder,
    model_spec: dict[str, Any],
    training_params: dict[str, Any],
    launch_params: dict[str, Any],
    training_checkpoints: str | None = None,
) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]], dict[str, Any]]:
    """Train the model that ``model_spec`` describes with ``TorchDistributor``.

    Args:
        train_mds, validation_mds: the exported MDS folders (each rank streams its share).
        model_spec: a spec node's output (``recsys_kedro.training.specs.spec_to_dict``).
        training_params: the model's optimisation settings (``epochs``, ``batch_size``,
            ``embedding_lr``, ..., ``patience``; :class:`~recsys_kedro.training.run.OptimSettings`).
        launch_params: the environment's ``launch`` settings (ranks, local or cluster
            mode, GPU, timeout, staging and resume checkpoints;
            :class:`~recsys_kedro.training.run.LaunchSettings`).
        training_checkpoints: the catalog's folder of this model's resume checkpoints;
            ``None``: no checkpoints.

    Returns:
        The trained model (config + full state dict), per-epoch metrics in kedro-mlflow's
        metric-history form, and the training summary.
    """
    spec = spec_from_dict(model_spec)
    try:
        settings = TrainSettings.from_params(training_params, launch_params)
        result = train(spec, model_spec, train_mds, validation_mds, settings, training_checkpoints)
    except SettingsError as exc:
        raise ValueError(f"{exc}: set it in {_conf_hint(spec.name)}") from exc
    except TrainingFailed as exc:
        resumes = (
            f" It continues from the last complete checkpoint in {exc.resumes_from}."
            if exc.resumes_from
            else ""
        )
        raise RuntimeError(
            f"{exc}\nRe-run from this node once fixed: `kedro run --pipelines="
            f"{spec.name.split('.')[0]} --from-nodes={spec.name}.training.train_model`."
            f"{resumes}"
        ) from exc
    summary = result.summary
    logger.info(
        "%s: kept epoch %d of %d (%s)",
        spec.name,
        summary["best_epoch"],
        summary["epochs"],
        f"best {summary['monitor']}" if summary["monitor"] else "the last one",
    )
    return result.model, metric_history(result.history), summary


def metric_history(history: dict[str, list[float]]) -> dict[str, list[dict[str, float]]]:
    """``{metric: [value per epoch]}`` in kedro-mlflow's metric-history form (MLflow names,
    one step per epoch)."""
    return {
        mlflow_metric_name(name): [
            {"step": epoch, "value": float(v)} for epoch, v in enumerate(values, start=1)
        ]
        for name, values in history.items()
    }


def plot_training_curves(training_summary: dict[str, Any]) -> Figure:
    """Loss, validation AUC and any per-epoch validation metric against epoch; the kept
    epoch is marked."""
    history = {k: v for k, v in training_summary["history"].items() if k != "train_samples_per_s"}
    return training_curves_figure(history, best_epoch=training_summary.get("best_epoch"))
