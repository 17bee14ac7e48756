"""two_tower-specific node: the model spec that the shared training stage trains."""

from __future__ import annotations

from typing import Any

import pandas as pd

from recsys_kedro.models.two_tower import TwoTowerConfig
from recsys_kedro.training.specs import spec_to_dict
from recsys_kedro.training.two_tower import TwoTowerSpec


def two_tower_spec(
    split_statistics: dict[str, Any],
    item_popularity: pd.DataFrame,
    model_params: dict[str, Any],
    training_params: dict[str, Any],
) -> dict[str, Any]:
    """The two-tower's spec: table sizes from the indexes, the loss and its log-q counts.

    Args:
        split_statistics: from ``summarise_splits``: the sizes of the user and item indexes.
        item_popularity: ``item_idx, n_positive`` (log-q correction of the softmax loss).
        model_params: ``embedding_dim``, ``layer_sizes``, ``normalize``.
        training_params: ``loss`` and ``temperature``.

    Returns:
        The spec as plain values (``spec_to_dict``), which the training node reads.
    """
    n_items = int(split_statistics["n_items"])
    popularity = item_popularity.sort_values("item_idx")
    if len(popularity) != n_items or (popularity["item_idx"].to_numpy() != range(n_items)).any():
        raise ValueError(
            f"item_popularity covers {len(popularity)} items, the index {n_items}: re-run the "
            "features stage (`kedro run --pipeline=two_tower --namespaces=two_tower.features`) "
            "so both come from the same item index"
        )
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
            item_counts=tuple(int(c) for c in popularity["n_positive"]),
        )
    except ValueError as exc:
        raise ValueError(
            f"{exc} (two_tower.model / two_tower.training in conf/base/parameters_two_tower.yml)"
        ) from exc
    return spec_to_dict(spec)
