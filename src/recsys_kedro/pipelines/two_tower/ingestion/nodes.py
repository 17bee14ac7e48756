"""Ingestion node: raw interactions -> labelled interactions, one per (user, item)."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame

from recsys_kedro.data.interactions import (
    LabelRule,
    LabelRuleError,
    deduplicate_interactions,
    label_interactions,
)

_CONF = "two_tower.ingestion.label in conf/base/parameters_two_tower.yml"


def clean_interactions(raw_interactions: DataFrame, params: dict[str, Any]) -> DataFrame:
    """Label each raw interaction by the declared rule (``params["label"]``, see
    :class:`~recsys_kedro.data.interactions.LabelRule`) and keep one per (user, item)."""
    try:
        rule = LabelRule.from_params(params.get("label") or {})
        labelled = label_interactions(raw_interactions, rule)
    except LabelRuleError as exc:
        raise ValueError(f"{exc} ({_CONF})") from exc
    return deduplicate_interactions(labelled, params)
