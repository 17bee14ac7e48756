"""Training nodes: launch distributed two-tower training and report its curves."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import fsspec
import pandas as pd
import torch
from matplotlib.figure import Figure

from recsys_kedro.evaluation.plots import training_curves_figure
from recsys_kedro.mds import MDSFolder
from recsys_kedro.models.two_tower import TwoTowerConfig
from recsys_kedro.training.launch import launch, resolve_use_gpu
from recsys_kedro.training.two_tower import TwoTowerTrainConfig, train

logger = logging.getLogger(__name__)


def train_two_tower(
    train_mds: MDSFolder,
    validation_mds: MDSFolder,
    split_statistics: dict[str, Any],
    item_popularity: pd.DataFrame,
    model_params: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]], dict[str, Any]]:
    """Train the two-tower model with ``TorchDistributor`` on ``params.num_processes`` ranks.

    Args:
        train_mds, validation_mds: the exported MDS folders (each rank streams its share).
        split_statistics: from ``summarise_splits``: the sizes of the user and item indexes.
        item_popularity: ``item_idx, n_positive`` (log-q correction of the softmax loss).
        model_params: ``embedding_dim``, ``layer_sizes``, ``normalize``.
        params: launch (``num_processes``, ``local_mode``, ``use_gpu``: null = detect) and
            optimisation parameters, see ``conf/base/parameters_two_tower.yml``.

    Returns:
        The model checkpoint (config + full state dict), per-epoch metrics in kedro-mlflow's
        metric-history form, and a training summary (history, throughput, sharding plan).
    """
    n_items = int(split_statistics["n_items"])
    popularity = item_popularity.sort_values("item_idx")
    if len(popularity) != n_items or (popularity["item_idx"].to_numpy() != range(n_items)).any():
        raise ValueError(
            f"item_popularity covers {len(popularity)} items, the index {n_items}: re-run the "
            "features stage so both come from the same item index"
        )
    use_gpu = resolve_use_gpu(params.get("use_gpu"))
    staging = f"{params['checkpoint_dir'].rstrip('/')}/two_tower-{uuid.uuid4().hex}.pt"
    config = TwoTowerTrainConfig(
        train=train_mds,
        validation=validation_mds,
        model=TwoTowerConfig(
            num_users=int(split_statistics["n_users"]),
            num_items=n_items,
            embedding_dim=int(model_params["embedding_dim"]),
            layer_sizes=tuple(model_params["layer_sizes"]),
            normalize=bool(model_params.get("normalize", True)),
        ),
        checkpoint_path=staging,
        item_counts=tuple(int(c) for c in popularity["n_positive"]),
        loss=params["loss"],
        temperature=float(params["temperature"]),
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
    )
    result = launch(
        train,
        config,
        num_processes=int(params["num_processes"]),
        local_mode=bool(params.get("local_mode", True)),
        use_gpu=use_gpu,
    )
    with fsspec.open(result["checkpoint_path"], "rb") as f:
        checkpoint = torch.load(f, map_location="cpu", weights_only=False)
    fs, path = fsspec.core.url_to_fs(result["checkpoint_path"])
    fs.rm(path)  # the catalog saves the model; the staging copy is not kept
    history = {
        name: [{"step": epoch, "value": float(v)} for epoch, v in enumerate(values, start=1)]
        for name, values in result["history"].items()
    }
    summary = {k: v for k, v in result.items() if k != "checkpoint_path"}
    return checkpoint, history, summary


def plot_training_curves(training_summary: dict[str, Any]) -> Figure:
    """Loss and validation AUC against epoch."""
    history = {k: v for k, v in training_summary["history"].items() if k != "train_samples_per_s"}
    return training_curves_figure(history)
