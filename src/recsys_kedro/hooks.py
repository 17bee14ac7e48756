"""Project hooks: the run's outputs locked against a concurrent run, parameters checked up
front, then the SparkSession, made once from ``conf/<env>/spark.yml``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kedro.config import MissingConfigException
from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline

from recsys_kedro.output_lock import OutputLocks
from recsys_kedro.spark import build_spark_session

logger = logging.getLogger(__name__)


def _early_checks() -> dict[str, Callable[[Any], Any]]:
    """Parameters that can be validated without any data: checked before Spark starts, so a
    bad value fails in a second, not after the session and the first stages have run. Each
    check is the one the nodes run (recsys_kedro.params)."""
    from recsys_kedro.params import click_log_settings, feature_schema

    return {"params:dlrm.data": click_log_settings, "params:feature_schema": feature_schema}


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


class RunLockHooks:
    """Locks the datasets a run writes (under the run's ``data_root``) before its first node
    and lets go when it ends: a second run that would write any of them stops at once, naming
    the first (:mod:`recsys_kedro.output_lock`). Memory datasets are not shared, so not locked."""

    def __init__(self) -> None:
        self._locks: OutputLocks | None = None
        self._data_root = "data"

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        try:
            root = str(context.config_loader["globals"].get("data_root", "data"))
        except (KeyError, MissingConfigException):  # no globals: the catalog's own paths
            root = "data"
        if "://" not in root:
            root = str((context.project_path / root).resolve())
        self._data_root = root

    @hook_impl(tryfirst=True)  # before Spark starts: a refused run costs nothing
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: DataCatalog
    ) -> None:
        outputs = []
        for name in pipeline.all_outputs():
            dataset = catalog.get(name)
            if dataset is not None and not isinstance(dataset, MemoryDataset):
                outputs.append(name.split("@")[0])  # one lock for every transcoding
        self._locks = OutputLocks(self._data_root)
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name")]
        run = f"kedro run --pipelines={','.join(n for n in names if n) or '__default__'}"
        self._locks.acquire(outputs, run=run)

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._locks is not None:
            self._locks.release()
            self._locks = None
