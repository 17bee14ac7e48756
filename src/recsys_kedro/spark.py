"""One place that builds the project's SparkSession (used by the Kedro hook and the tests)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from pyspark.sql import SparkSession


def build_spark_session(
    conf: Mapping[str, Any] | None = None, app_name: str = "recsys-kedro"
) -> SparkSession:
    """Get or create the SparkSession described by ``conf`` (Spark properties).

    Spark's Python workers run ``python3`` from PATH unless told otherwise, which
    is not this virtual environment: executors then fail to import ``streaming``
    inside ``dataframe_to_mds``. Point them at this interpreter unless the user
    already chose one (on a cluster, ``spark.pyspark.python`` in ``spark.yml``).
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    bind = (conf or {}).get("spark.driver.bindAddress")
    if bind and str((conf or {}).get("spark.master", "")).startswith("local"):
        # A local JVM binds where spark.yml says: tell Spark's address lookup too, or it
        # warns on every start that the hostname resolves to a loopback address.
        os.environ.setdefault("SPARK_LOCAL_IP", str(bind))
    builder = SparkSession.builder.appName(app_name)
    for key, value in (conf or {}).items():
        if value is not None:  # an environment removes a base setting with null
            builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def active_spark_session() -> SparkSession:
    """The SparkSession the project's hook made (for nodes that create data from nothing).

    Raises:
        RuntimeError: if no session is active (the code runs outside ``kedro run`` and did not
            call :func:`build_spark_session`).
    """
    spark = SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError(
            "no active SparkSession: run through `kedro run` (its hook builds the session "
            "from conf/<env>/spark.yml) or call recsys_kedro.spark.build_spark_session() first"
        )
    return spark
