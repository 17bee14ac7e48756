"""Training nodes (shared by every model): launch the trainer on a model spec, plot its curves."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import uuid
from typing import Any

import fsspec
from matplotlib.figure import Figure

from recsys_kedro.evaluation.plots import training_curves_figure
from recsys_kedro.mds import MDSFolder
from recsys_kedro.models.checkpoint import load_checkpoint
from recsys_kedro.pipelines.reporting import mlflow_metric_name
from recsys_kedro.training.checkpointing import CheckpointPolicy
from recsys_kedro.training.launch import launch, resolve_use_gpu
from recsys_kedro.training.specs import spec_from_dict
from recsys_kedro.training.trainer import TrainConfig, fit

logger = logging.getLogger(__name__)


def _conf_hint(name: str) -> str:
    return f"`{name}.training` in conf/base/parameters_{name.split('.', maxsplit=1)[0]}.yml"


# Training parameters that change how a run is launched or reported, not what it computes: a
# run may resume from a checkpoint written with other values of these.
_NOT_IN_FINGERPRINT = frozenset(
    {"progress", "checkpoint", "checkpoint_dir", "cache_dir", "timeout_s", "local_mode", "use_gpu"}
)


def _folder_identity(folder: MDSFolder) -> dict[str, Any]:
    """What identifies an exported folder's content: its description and its MDS index."""
    fs, root = fsspec.core.url_to_fs(folder.remote or folder.local)
    index = f"{root.rstrip('/')}/index.json"
    digest = hashlib.sha256(fs.cat_file(index)).hexdigest() if fs.exists(index) else None
    return {**dataclasses.asdict(folder), "local": None, "index_sha256": digest}


def run_fingerprint(model_spec: dict[str, Any], params: dict[str, Any], *folders: MDSFolder) -> str:
    """A short hash of what a training run computes: the model, the training settings (not
    launch or reporting ones) and the data. Checkpoints live in a folder named by it, so a run
    resumes only from checkpoints of the same model, settings and data."""
    what = {
        "spec": model_spec,
        "training": {k: v for k, v in params.items() if k not in _NOT_IN_FINGERPRINT},
        "data": [_folder_identity(folder) for folder in folders],
    }
    text = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _checkpoint_policy(
    checkpoints_dir: str | None, fingerprint: str | None, settings: dict[str, Any] | None
) -> CheckpointPolicy | None:
    if checkpoints_dir is None or settings is None or fingerprint is None:
        return None
    return CheckpointPolicy(
        directory=f"{checkpoints_dir.rstrip('/')}/{fingerprint}",
        every_n_steps=settings.get("every_n_steps"),
        keep_last=int(settings.get("keep_last", 2)),
        resume=bool(settings.get("resume", True)),
    )


def train_model(
    train_mds: MDSFolder,
    validation_mds: MDSFolder,
    model_spec: dict[str, Any],
    params: dict[str, Any],
    training_checkpoints: str | None = None,
) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]], dict[str, Any]]:
    """Train the model that ``model_spec`` describes with ``TorchDistributor``.

    Args:
        train_mds, validation_mds: the exported MDS folders (each rank streams its share).
        model_spec: a spec node's output (``recsys_kedro.training.specs.spec_to_dict``).
        params: launch (``num_processes``, ``local_mode``, ``use_gpu``: null = detect,
            ``timeout_s``), optimisation (``epochs``, ``batch_size``, ``embedding_lr``, ...,
            ``patience``, ``train_pipeline``) and ``checkpoint`` parameters
            (``every_n_steps``, ``keep_last``, ``resume``, ``keep_after_success``; the whole
            ``checkpoint: null`` turns checkpoints off).
        training_checkpoints: the catalog's folder for this model's sharded checkpoints; each
            run writes under ``<folder>/<fingerprint>`` (:func:`run_fingerprint`), so a re-run
            of the same model on the same data continues where a failed run stopped.
            ``None``: no checkpoints (e.g. tuning trials).

    Returns:
        The model checkpoint (config + full state dict), per-epoch metrics in kedro-mlflow's
        metric-history form, and a training summary (history, best epoch, throughput,
        sharding plan).
    """
    spec = spec_from_dict(model_spec)
    use_gpu = resolve_use_gpu(params.get("use_gpu"))
    staging_dir = params["checkpoint_dir"].rstrip("/")
    staging = f"{staging_dir}/{spec.name}-{uuid.uuid4().hex}.pt"
    settings = params.get("checkpoint", {})
    fingerprint = None
    if training_checkpoints is not None and settings is not None:
        fingerprint = run_fingerprint(model_spec, params, train_mds, validation_mds)
    try:
        policy = _checkpoint_policy(training_checkpoints, fingerprint, settings)
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
            checkpoints=policy,
            timeout_s=float(params.get("timeout_s", 600)),
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
            # Shared storage on a cluster (like the staging checkpoint): the ranks' outcomes.
            outcome_dir=staging_dir,
        )
    except RuntimeError as exc:
        resumes = (
            f" It continues from the last complete checkpoint in {policy.directory}."
            if policy is not None and policy.resume
            else ""
        )
        raise RuntimeError(
            f"{exc}\nRe-run from this node once fixed: `kedro run --pipelines="
            f"{spec.name.split('.')[0]} --from-nodes={spec.name}.training.train_model`."
            f"{resumes}"
        ) from exc
    checkpoint = load_checkpoint(result["checkpoint_path"])
    fs, path = fsspec.core.url_to_fs(result["checkpoint_path"])
    fs.rm(path)  # the catalog saves the model; the staging copy is not kept
    if policy is not None and not (settings or {}).get("keep_after_success"):
        # They exist to survive a failure; the model is saved now.
        fs, path = fsspec.core.url_to_fs(policy.directory)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    history = {
        mlflow_metric_name(name): [
            {"step": epoch, "value": float(v)} for epoch, v in enumerate(values, start=1)
        ]
        for name, values in result["history"].items()
    }
    summary = {k: v for k, v in result.items() if k != "checkpoint_path"}
    summary["run_fingerprint"] = fingerprint
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
