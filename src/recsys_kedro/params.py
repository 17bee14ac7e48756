"""Parameter checks at the Kedro boundary, shared by the project hook (which runs them before
Spark starts) and the nodes that use the values: the framework's own validation, with the
parameter path and conf file that hold the value to fix."""

from __future__ import annotations

from typing import Any

from recsys_kedro.data.click_logs import ClickLogSpec
from recsys_kedro.data.criteo import CriteoLayout
from recsys_kedro.data.feature_schema import FeatureSchema, SchemaError
from recsys_kedro.data.interactions import LabelRule

DLRM_CONF = "conf/base/parameters_dlrm.yml"


CLICK_LOG_SOURCES = ("generator", "criteo")


def click_log_source(data_params: dict[str, Any]) -> str:
    """``dlrm.data.source``: ``generator`` (the planted demo) or ``criteo`` (the catalog's
    ``dlrm.raw_click_logs``)."""
    source = data_params.get("source", "generator")
    if source not in CLICK_LOG_SOURCES:
        raise ValueError(
            f"dlrm.data.source: {source!r} is not one of {CLICK_LOG_SOURCES} (in {DLRM_CONF})"
        )
    return source


def criteo_layout(data_params: dict[str, Any]) -> CriteoLayout:
    """The click logs' layout and encoding from ``dlrm.data.criteo``."""
    try:
        return CriteoLayout.from_params(data_params.get("criteo") or {})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"dlrm.data.criteo: {exc} (in {DLRM_CONF})") from exc


def click_log_settings(data_params: dict[str, Any]) -> ClickLogSpec | CriteoLayout:
    """The settings of the source ``dlrm.data.source`` names (checked before Spark starts)."""
    if click_log_source(data_params) == "criteo":
        return criteo_layout(data_params)
    return click_log_spec(data_params)


def click_log_spec(data_params: dict[str, Any]) -> ClickLogSpec:
    """The click-log generator's spec from ``dlrm.data``; a bad value names the parameter and
    the file."""
    try:
        return ClickLogSpec.from_params(data_params["generator"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"dlrm.data.generator: {exc} (in {DLRM_CONF})") from exc


FEATURE_SCHEMA_FILE = "conf/base/parameters_features.yml"


def feature_schema(params: dict[str, Any] | None) -> FeatureSchema:
    """``feature_schema`` parsed; a bad schema names the parameters file to fix."""
    try:
        return FeatureSchema.from_params(params)
    except SchemaError as exc:
        raise ValueError(f"feature_schema: {exc} (in {FEATURE_SCHEMA_FILE})") from exc


def weighted_label_rule(ingestion_params: dict[str, Any] | None) -> bool:
    """Whether ``two_tower.ingestion.label`` weighs event types (rows carry a ``weight``)."""
    label = dict((ingestion_params or {}).get("label") or {})
    return LabelRule.from_params(label).weighted if label else False
