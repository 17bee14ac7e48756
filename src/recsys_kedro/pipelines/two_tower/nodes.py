"""two_tower-specific nodes: the towers' side tables and the model spec that the shared
training stage trains."""

from __future__ import annotations

from typing import Any

import pandas as pd

from recsys_kedro.data.feature_schema import report_layout
from recsys_kedro.params import feature_schema, weighted_label_rule
from recsys_kedro.training.specs import spec_to_dict
from recsys_kedro.training.two_tower import (
    StaleStatisticsError,
    tower_side_tables,
    two_tower_spec_from_params,
)

_RERUN_FEATURES = "`kedro run --pipelines=two_tower --namespaces=two_tower.features`"


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
    layout = report_layout(feature_schema(schema), user_report, item_report, ratings=False)
    cards = layout.cardinalities
    sparse = {
        "user": {name: int(cards[name]) for name in layout.user_sparse},
        "item": {name: int(cards[name]) for name in layout.item_sparse},
    }
    dense = {"user": list(layout.user_dense), "item": list(layout.item_dense)}
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
            weighted=weighted_label_rule(ingestion_params),
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
