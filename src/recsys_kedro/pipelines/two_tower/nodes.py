"""two_tower-specific nodes: the towers' side tables and the model spec that the shared
training stage trains."""

from __future__ import annotations

from typing import Any

import pandas as pd

from recsys_kedro.data.interactions import LabelRule
from recsys_kedro.params import feature_schema
from recsys_kedro.training.specs import spec_to_dict
from recsys_kedro.training.two_tower import (
    StaleStatisticsError,
    tower_side_tables,
    two_tower_spec_from_params,
)

_RERUN_FEATURES = "`kedro run --pipelines=two_tower --namespaces=two_tower.features`"


def weighted_rule(ingestion_params: dict[str, Any] | None) -> bool:
    """Whether ``two_tower.ingestion.label`` weighs event types (rows carry a ``weight``)."""
    label = dict((ingestion_params or {}).get("label") or {})
    return LabelRule.from_params(label).weighted if label else False


def side_tables(
    user_profiles: pd.DataFrame,
    item_profiles: pd.DataFrame,
    user_report: dict[str, Any],
    item_report: dict[str, Any],
    item_popularity: pd.DataFrame,
    schema: dict[str, Any],
) -> dict[str, Any]:
    """The towers' side features (every feature of the schema: user ones in the user
    tower, item ones in the item tower) as per-id tables; an item with no train row is
    marked unknown, so the model encodes it by its attributes."""
    parsed = feature_schema(schema)
    sparse, dense = {}, {}
    for entity, table, report in (
        ("user", parsed.users, user_report),
        ("item", parsed.items, item_report),
    ):
        roles = [f for f in table.features if f.role != "dense"]
        sparse[entity] = {f.name: int(report["cardinalities"][f.name]) for f in roles}
        dense[entity] = [c for f in table.features if f.role == "dense" for c in f.outputs]
    counts = item_popularity.sort_values("item_idx")["n_rated"].to_numpy()
    try:
        return tower_side_tables(user_profiles, item_profiles, sparse, dense, counts > 0)
    except StaleStatisticsError as exc:
        raise ValueError(f"{exc}: re-run the features stages ({_RERUN_FEATURES})") from exc


def two_tower_spec(
    split_statistics: dict[str, Any],
    item_popularity: pd.DataFrame,
    side: dict[str, Any],
    model_params: dict[str, Any],
    training_params: dict[str, Any],
    ingestion_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The two-tower's spec (:func:`~recsys_kedro.training.two_tower.two_tower_spec_from_params`)
    as plain values (``spec_to_dict``), which the training node reads; with
    ``two_tower.model.side_features`` the towers read ``side`` (:func:`side_tables`), and a
    label rule with event weights (``two_tower.ingestion.label``) makes the loss weighted."""
    try:
        spec = two_tower_spec_from_params(
            split_statistics,
            item_popularity,
            model_params,
            training_params,
            side,
            weighted=weighted_rule(ingestion_params),
        )
    except StaleStatisticsError as exc:
        raise ValueError(
            f"{exc}: re-run the features stage ({_RERUN_FEATURES}) so both come from the same "
            "item index"
        ) from exc
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"{exc} (two_tower.model / two_tower.training in conf/base/parameters_two_tower.yml)"
        ) from exc
    return spec_to_dict(spec)
