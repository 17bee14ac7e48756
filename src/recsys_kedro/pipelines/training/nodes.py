"""Training nodes (shared by every model): launch the trainer on a model spec, plot its curves."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import fsspec
from matplotlib.figure import Figure

from recsys_kedro.evaluation.plots import training_curves_figure
from recsys_kedro.mds import MDSFolder
from recsys_kedro.models.checkpoint import load_checkpoint
from recsys_kedro.pipelines.reporting import mlflow_metric_name
from recsys_kedro.training.launch import launch, resolve_use_gpu
from recsys_kedro.training.specs import spec_from_dict
from recsys_kedro.training.trainer import TrainConfig, fit

logger = logging.getLogger(__name__)


def _conf_hint(name: str) -> str:
    return f"`{name}.training` in conf/base/parameters_{name.split('.', maxsplit=1)[0]}.yml"


def train_model(
    train_mds: MDSFolder,
    validation_mds: MDSFolder,
    model_spec: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]], dict[str, Any]]:
    """Train the model that ``model_spec`` describes with ``TorchDistributor``.

    Args:
        train_mds, validation_mds: the exported MDS folders (each rank streams its share).
        model_spec: a spec node's output (``recsys_kedro.training.specs.spec_to_dict``).
        params: launch (``num_processes``, ``local_mode``, ``use_gpu``: null = detect) and
            optimisation parameters (``epochs``, ``batch_size``, ``embedding_lr``, ...,
            ``patience``, ``train_pipeline``).

    Returns:
        The model checkpoint (config + full state dict), per-epoch metrics in kedro-mlflow's
        metric-history form, and a training summary (history, best epoch, throughput,
        sharding plan).
    """
    spec = spec_from_dict(model_spec)
    use_gpu = resolve_use_gpu(params.get("use_gpu"))
    staging = f"{params['checkpoint_dir'].rstrip('/')}/{spec.name}-{uuid.uuid4().hex}.pt"
    try:
        config = TrainConfig(
            train=train_mds,
            validation=validation_mds,
            checkpoint_path=staging,
            epochs=int(params["epochs"]),
            batch_size=int(params["batch_size"]),
            eval_batch_size=int(params["eval_batch_size"]),
            embedding_lr=float(params["embedding_lr"]),
            dense_lr=float(params["dense_lr"]),
            seed=int(params["seed"]),
            use_gpu=use_gpu,
            cache_dir=params.get("cache_dir"),
            progress=bool(params.get("progress", True)),
            drop_last=bool(params.get("drop_last", True)),
            patience=params.get("patience"),
            train_pipeline=params.get("train_pipeline", "auto"),
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{exc}: set it in {_conf_hint(spec.name)}") from exc
    try:
        result = launch(
            fit,
            spec,
            config,
            num_processes=int(params["num_processes"]),
            local_mode=bool(params.get("local_mode", True)),
            use_gpu=use_gpu,
        )
    except RuntimeError as exc:
        raise RuntimeError(
            f"{exc} Re-run from this node once fixed: `kedro run --pipelines="
            f"{spec.name.split('.')[0]} --from-nodes={spec.name}.training.train_model`."
        ) from exc
    checkpoint = load_checkpoint(result["checkpoint_path"])
    fs, path = fsspec.core.url_to_fs(result["checkpoint_path"])
    fs.rm(path)  # the catalog saves the model; the staging copy is not kept
    history = {
        mlflow_metric_name(name): [
            {"step": epoch, "value": float(v)} for epoch, v in enumerate(values, start=1)
        ]
        for name, values in result["history"].items()
    }
    summary = {k: v for k, v in result.items() if k != "checkpoint_path"}
    logger.info(
        "%s: kept epoch %d of %d (%s)",
        spec.name,
        summary["best_epoch"],
        summary["epochs"],
        f"best {summary['monitor']}" if summary["monitor"] else "the last one",
    )
    return checkpoint, history, summary


def plot_training_curves(training_summary: dict[str, Any]) -> Figure:
    """Loss, validation AUC and any per-epoch validation metric against epoch; the kept
    epoch is marked."""
    history = {k: v for k, v in training_summary["history"].items() if k != "train_samples_per_s"}
    return training_curves_figure(history, best_epoch=training_summary.get("best_epoch"))
