"""Parameter checks at the Kedro boundary, shared by the project hook (which runs them before
Spark starts) and the nodes that use the values: the framework's own validation, with the
parameter path and conf file that hold the value to fix."""

from __future__ import annotations

from typing import Any

from recsys_kedro.data.click_logs import ClickLogSpec

DLRM_CONF = "conf/base/parameters_dlrm.yml"


def click_log_spec(data_params: dict[str, Any]) -> ClickLogSpec:
    """The click-log generator's spec from ``dlrm.data``; a bad value names the parameter and
    the file."""
    try:
        return ClickLogSpec.from_params(data_params["generator"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"dlrm.data.generator: {exc} (in {DLRM_CONF})") from exc
