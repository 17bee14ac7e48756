"""Side features (shared by the two-tower's towers and the recommend funnel's ranker): each
user and item profile as the feature schema declares it (``params:feature_schema``,
:mod:`recsys_kedro.data.side_features`), with a report of what was found."""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import DataFrame

from recsys_kedro.data import side_features as sf
from recsys_kedro.params import FEATURE_SCHEMA_FILE, feature_schema

logger = logging.getLogger(__name__)


def _profiles(
    side: DataFrame | None, index: DataFrame, table: sf.SideTable, dataset: str
) -> tuple[DataFrame, dict[str, Any]]:
    try:
        profiles, report = sf.side_profiles(side, index, table)
    except sf.SchemaError as exc:
        raise ValueError(
            f"{exc} (catalog entry `{dataset}`; its features: feature_schema.{table.entity}s "
            f"in {FEATURE_SCHEMA_FILE})"
        ) from exc
    cover = report["coverage"]
    logger.info(
        "%s features: %d of %d ids have a row in `%s` (the rest get unknown values), "
        "%d rows match no id, %d rows have no id; missing values per feature: %s",
        table.entity,
        cover["with_side_row"],
        cover["ids"],
        dataset,
        cover["unmatched_side_rows"],
        cover["side_rows_without_id"],
        cover["missing"],
    )
    return profiles, report


def build_user_profiles(
    raw_users: DataFrame, user_index: DataFrame, schema: dict[str, Any]
) -> tuple[DataFrame, dict[str, Any]]:
    """``user_idx`` and the user features ``feature_schema.users`` declares, and a report
    of how many users have a side row and how many values are missing."""
    return _profiles(raw_users, user_index, feature_schema(schema).users, "raw_users")


def build_item_profiles(
    raw_items: DataFrame, item_index: DataFrame, schema: dict[str, Any]
) -> tuple[DataFrame, dict[str, Any]]:
    """``item_idx`` and the item features ``feature_schema.items`` declares, and a report."""
    return _profiles(raw_items, item_index, feature_schema(schema).items, "raw_items")
