"""two_tower-specific node: the model spec that the shared training stage trains."""

from __future__ import annotations

from typing import Any

import pandas as pd

from recsys_kedro.training.specs import spec_to_dict
from recsys_kedro.training.two_tower import StaleStatisticsError, two_tower_spec_from_params

_RERUN_FEATURES = "`kedro run --pipelines=two_tower --namespaces=two_tower.features`"


def two_tower_spec(
    split_statistics: dict[str, Any],
    item_popularity: pd.DataFrame,
    model_params: dict[str, Any],
    training_params: dict[str, Any],
) -> dict[str, Any]:
    """The two-tower's spec (:func:`~recsys_kedro.training.two_tower.two_tower_spec_from_params`)
    as plain values (``spec_to_dict``), which the training node reads."""
    try:
        spec = two_tower_spec_from_params(
            split_statistics, item_popularity, model_params, training_params
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
