"""Shared fixtures: one local SparkSession for the whole test session."""

from __future__ import annotations

import os

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pytest

TEST_SPARK_CONF = {
    "spark.master": "local[2]",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.driver.memory": "2g",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}


@pytest.fixture(scope="session")
def spark():
    """The test session's SparkSession (local[2]); created once, stopped at the end."""
    from recsys_kedro.spark import build_spark_session

    session = build_spark_session(TEST_SPARK_CONF, app_name="recsys-kedro-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def recommend_project(tmp_path_factory, spark):
    """A small project after one `recommend` run, read (never written) by the pipeline's
    integration checks and by the notebook test: the funnel runs once per test session."""
    import copy

    from tests.integration.conftest import make_project, run_project
    from tests.integration.test_recommend_pipeline import PARAMS, _write_side_files
    from tests.integration.test_two_tower_pipeline import _write_fixture_inter

    root = make_project(tmp_path_factory.mktemp("recommend_project"))
    raw = root / "data" / "01_raw" / "ml-100k"
    _write_fixture_inter(raw / "ml-100k.inter")
    _write_side_files(raw)
    run_project(root, copy.deepcopy(PARAMS), pipeline_name="recommend")
    return root
