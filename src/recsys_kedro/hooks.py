"""Project hooks: the SparkSession is created here, once, from ``conf/<env>/spark.yml``."""

from __future__ import annotations

from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl

from recsys_kedro.spark import build_spark_session


class SparkHooks:
    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        """Initialise the SparkSession from the ``spark`` configuration of the run's environment."""
        conf = context.config_loader["spark"]
        build_spark_session(conf, app_name=context.project_path.name)
