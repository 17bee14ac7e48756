"""Project hooks: parameters checked up front, then the SparkSession, made once from
``conf/<env>/spark.yml``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline

from recsys_kedro.spark import build_spark_session

logger = logging.getLogger(__name__)


def _early_checks() -> dict[str, Callable[[Any], Any]]:
    """Parameters that can be validated without any data: checked before Spark starts, so a
    bad value fails in a second, not after the session and the first stages have run. Each
    check is the one the nodes run (recsys_kedro.params)."""
    from recsys_kedro.params import click_log_spec

    return {"params:dlrm.data": click_log_spec}


class SparkHooks:
    """Builds the SparkSession from the run environment's ``spark`` configuration."""

    def __init__(self) -> None:
        self._conf: dict[str, Any] | None = None
        self._app_name = "recsys-kedro"

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        self._conf = dict(context.config_loader["spark"])
        self._app_name = context.project_path.name

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: DataCatalog
    ) -> None:
        """Check the run's parameters (only those its pipeline uses), then start Spark."""
        inputs = pipeline.inputs()
        for name, check in _early_checks().items():
            if name in inputs:
                check(catalog.load(name))
        build_spark_session(self._conf or {}, app_name=self._app_name)
