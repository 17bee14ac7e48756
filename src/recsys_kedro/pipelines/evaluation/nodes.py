"""Evaluation nodes: embeddings, AUC, full-catalogue retrieval metrics vs a popularity baseline."""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from recsys_kedro.evaluation.plots import metrics_at_k_figure
from recsys_kedro.evaluation.retrieval import (
    auc,
    embedding_score_fn,
    full_catalogue_topk_metrics,
    popularity_score_fn,
)
from recsys_kedro.models.two_tower import model_from_checkpoint

logger = logging.getLogger(__name__)


def embed_users_and_items(
    model_checkpoint: dict[str, Any], user_index: pd.DataFrame, item_index: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Query embeddings of every indexed user and candidate embeddings of every item.

    Returns:
        ``user_idx, user_id, embedding`` and ``item_idx, item_id, embedding`` (one float32
        vector per row), in index order: what a vector index or a serving job loads.
    """
    model = model_from_checkpoint(model_checkpoint)
    out = []
    for index, idx_col, encode in (
        (user_index, "user_idx", model.encode_users),
        (item_index, "item_idx", model.encode_items),
    ):
        frame = index.sort_values(idx_col).reset_index(drop=True)
        ids = torch.as_tensor(frame[idx_col].to_numpy(dtype=np.int64))
        vectors = torch.cat([encode(chunk) for chunk in ids.split(65536)]).numpy()
        frame["embedding"] = list(vectors.astype(np.float32))
        out.append(frame)
    return out[0], out[1]


def _matrix(embeddings: pd.DataFrame, idx_col: str) -> np.ndarray:
    frame = embeddings.sort_values(idx_col)
    if (frame[idx_col].to_numpy() != np.arange(len(frame))).any():
        raise ValueError(f"{idx_col} of the embeddings is not contiguous from 0")
    return np.stack(frame["embedding"].to_numpy()).astype(np.float32)


def _mlflow_name(key: str) -> str:
    """MLflow metric names cannot hold '@': ``recall@10`` -> ``recall_at_10``."""
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", key.replace("@", "_at_"))


def evaluate_retrieval(
    user_embeddings: pd.DataFrame,
    item_embeddings: pd.DataFrame,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    test: pd.DataFrame,
    item_popularity: pd.DataFrame,
    split_statistics: dict[str, Any],
    training_summary: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, dict[str, float]], Figure]:
    """Test-split metrics of the model and of a most-popular baseline, computed the same way.

    AUC: the model's score ``<user, item>`` on every labelled test pair. Recall@K/NDCG@K:
    for every test user with a positive test item, the top K of the whole catalogue,
    with the user's training items (and validation items, if
    ``exclude_validation_items``) excluded; relevant = the positive test items.

    Returns:
        The metrics dictionary (``two_tower_metrics.json``), the same numbers for MLflow,
        and the metric-at-K figure (model vs baseline).
    """
    ks = [int(k) for k in params["ks"]]
    users = _matrix(user_embeddings, "user_idx")
    items = _matrix(item_embeddings, "item_idx")
    n_items = items.shape[0]
    seen = [train]
    if params.get("exclude_validation_items", True):
        seen.append(validation)
    seen_pairs = pd.concat([s[["user_idx", "item_idx"]] for s in seen], ignore_index=True)
    positives = test[test["label"] == 1]
    common = {
        "n_items": n_items,
        "test_users": positives["user_idx"].to_numpy(np.int64),
        "test_items": positives["item_idx"].to_numpy(np.int64),
        "exclude_users": seen_pairs["user_idx"].to_numpy(np.int64),
        "exclude_items": seen_pairs["item_idx"].to_numpy(np.int64),
        "ks": ks,
        "batch_size": int(params.get("batch_size", 1024)),
    }
    model_metrics = full_catalogue_topk_metrics(embedding_score_fn(users, items), **common)
    popularity = item_popularity.sort_values("item_idx")["n_positive"].to_numpy()
    train_positive_items = np.repeat(np.arange(len(popularity)), popularity)
    baseline = full_catalogue_topk_metrics(
        popularity_score_fn(train_positive_items, n_items), **common
    )
    test_scores = np.einsum(
        "ij,ij->i",
        users[test["user_idx"].to_numpy(np.int64)],
        items[test["item_idx"].to_numpy(np.int64)],
    )
    metrics: dict[str, Any] = {"test_auc": auc(test["label"].to_numpy(), test_scores)}
    for k in ks:
        for name in ("recall", "ndcg"):
            metrics[f"{name}@{k}"] = model_metrics[f"{name}@{k}"]
    for k in ks:
        for name in ("recall", "ndcg"):
            metrics[f"popularity_{name}@{k}"] = baseline[f"{name}@{k}"]
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
    logger.info(
        "test: AUC %.4f | recall@%d %.4f vs popularity %.4f | ndcg@%d %.4f vs %.4f",
        metrics["test_auc"],
        ks[0],
        metrics[f"recall@{ks[0]}"],
        metrics[f"popularity_recall@{ks[0]}"],
        ks[0],
        metrics[f"ndcg@{ks[0]}"],
        metrics[f"popularity_ndcg@{ks[0]}"],
    )
    mlflow_metrics = {
        _mlflow_name(f"test_{k}" if not k.startswith("test_") else k): {
            "step": 0,
            "value": float(v),
        }
        for k, v in metrics.items()
    }
    figure = metrics_at_k_figure(model_metrics, baseline, ks)
    return metrics, mlflow_metrics, figure
