"""two_tower-specific node: the model spec that the shared training stage trains."""

from __future__ import annotations

from typing import Any

import pandas as pd

from recsys_kedro.models.two_tower import TwoTowerConfig
from recsys_kedro.training.specs import spec_to_dict
from recsys_kedro.training.two_tower import TwoTowerSpec

LOG_Q_SOURCES = {"positives": "n_positive", "candidates": "n_rated", "none": None}


def _log_q_counts(popularity: pd.DataFrame, source: str) -> tuple[int, ...] | None:
    if source not in LOG_Q_SOURCES:
        raise ValueError(
            f"two_tower.training.log_q must be one of {sorted(LOG_Q_SOURCES)}, got {source!r} "
            "(conf/base/parameters_two_tower.yml)"
        )
    column = LOG_Q_SOURCES[source]
    if column is None:
        return None
    if column not in popularity:
        raise ValueError(
            f"item_popularity has no {column!r} column: re-run the features stage "
            "(`kedro run --pipelines=two_tower --namespaces=two_tower.features`)"
        )
    return tuple(int(c) for c in popularity[column])


def two_tower_spec(
    split_statistics: dict[str, Any],
    item_popularity: pd.DataFrame,
    model_params: dict[str, Any],
    training_params: dict[str, Any],
) -> dict[str, Any]:
    """The two-tower's spec: table sizes from the indexes, the loss and its log-q counts.

    Args:
        split_statistics: from ``summarise_splits``: the sizes of the user and item indexes.
        item_popularity: ``item_idx, n_positive, n_rated`` (log-q correction of the softmax
            loss: ``training.log_q`` picks ``candidates`` = every train row, ``positives``
            or ``none``).
        model_params: ``embedding_dim``, ``layer_sizes``, ``normalize``.
        training_params: ``loss``, ``temperature``, ``log_q``, ``mask_same_user``,
            ``uniform_negatives`` (extra negatives per row, drawn uniformly),
            ``monitor`` (the per-epoch validation metric that picks the epoch kept, e.g.
            ``val_ndcg@10``; null: the last epoch) and ``validation`` (``ks``,
            ``max_users``, ``seed``).

    Returns:
        The spec as plain values (``spec_to_dict``), which the training node reads.
    """
    n_items = int(split_statistics["n_items"])
    popularity = item_popularity.sort_values("item_idx")
    if len(popularity) != n_items or (popularity["item_idx"].to_numpy() != range(n_items)).any():
        raise ValueError(
            f"item_popularity covers {len(popularity)} items, the index {n_items}: re-run the "
            "features stage (`kedro run --pipelines=two_tower --namespaces=two_tower.features`) "
            "so both come from the same item index"
        )
    validation = dict(training_params.get("validation") or {})
    try:
        spec = TwoTowerSpec(
            model=TwoTowerConfig(
                num_users=int(split_statistics["n_users"]),
                num_items=n_items,
                embedding_dim=int(model_params["embedding_dim"]),
                layer_sizes=tuple(model_params["layer_sizes"]),
                normalize=bool(model_params.get("normalize", True)),
            ),
            loss=training_params["loss"],
            temperature=float(training_params["temperature"]),
            item_counts=_log_q_counts(popularity, training_params.get("log_q", "positives")),
            mask_same_user=bool(training_params.get("mask_same_user", False)),
            uniform_negatives=int(training_params.get("uniform_negatives", 0)),
            monitor=training_params.get("monitor", "val_ndcg@10"),
            validation_ks=tuple(validation.get("ks", (10,))),
            validation_max_users=validation.get("max_users"),
            validation_seed=int(validation.get("seed", 0)),
        )
    except ValueError as exc:
        raise ValueError(
            f"{exc} (two_tower.model / two_tower.training in conf/base/parameters_two_tower.yml)"
        ) from exc
    return spec_to_dict(spec)
