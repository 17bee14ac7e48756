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


#: The servable model's two catalog entries as in conf/base, with its requirements declared:
#: MLflow would otherwise infer them by loading the model in another process, twice (~10 s),
#: which no test here checks.
SERVING_CATALOG = """
recommend.recommender:
  type: kedro_mlflow.io.models.MlflowModelLocalFileSystemDataset
  flavor: mlflow.pyfunc
  pyfunc_workflow: python_model
  filepath: ${globals:data_root}/06_models/recommender
  save_args: {pip_requirements: [mlflow]}

recommend.recommender_logged:
  type: kedro_mlflow.io.models.MlflowModelTrackingDataset
  flavor: mlflow.pyfunc
  pyfunc_workflow: python_model
  save_args: {name: recommender, pip_requirements: [mlflow]}
"""


@pytest.fixture(scope="session")
def dlrm_run(tmp_path_factory):
    """The session's one small `dlrm` run, a separate `kedro run --pipelines=dlrm` in the
    background (tests/integration/test_dlrm_pipeline.py reads it). The cluster test starts it
    just before its own `two_tower` run, so that two pipelines run at once on this machine
    (tests/integration/test_cluster.py)."""
    from tests.integration.conftest import BackgroundRun, make_project
    from tests.integration.test_dlrm_pipeline import PARAMS

    run = BackgroundRun(make_project(tmp_path_factory.mktemp("dlrm_project")), "dlrm", PARAMS)
    yield run
    run.stop()


@pytest.fixture(scope="session")
def two_tower_project(tmp_path_factory, spark):
    """A small project after one `two_tower` run (two epochs, a one-point ALS grid), read
    (never written) by every test that needs one: the pipeline's integration checks, the
    notebook test, the cluster test's comparison and the `recommend` run built on it."""
    import copy

    from tests.integration.conftest import make_project, run_project
    from tests.integration.test_two_tower_pipeline import (
        SMALL_RUN,
        write_fixture_inter,
        write_side_files,
    )

    root = make_project(tmp_path_factory.mktemp("two_tower_project"))
    raw = root / "data" / "01_raw" / "ml-100k"
    n_pairs = write_fixture_inter(raw / "ml-100k.inter")
    write_side_files(raw)
    run_project(root, {"two_tower": copy.deepcopy(SMALL_RUN)}, pipeline_name="two_tower")
    return root, n_pairs


@pytest.fixture(scope="session")
def recommend_project(tmp_path_factory, two_tower_project):
    """A small project after one `recommend` run, read (never written) by the pipeline's
    integration checks and by the notebook test: the funnel runs once per test session.

    It starts from a copy of the session's `two_tower` project and runs the funnel's own
    nodes (namespace `recommend`) on the two-tower that run trained: the two_tower stages
    the funnel shares are the very nodes that run executed, with the same parameters."""
    import copy
    import shutil

    from tests.integration.conftest import make_project, run_project
    from tests.integration.test_recommend_pipeline import PARAMS

    root = make_project(tmp_path_factory.mktemp("recommend_project"), SERVING_CATALOG)
    shutil.copytree(two_tower_project[0] / "data", root / "data")
    run_project(root, copy.deepcopy(PARAMS), pipeline_name="recommend", namespaces=["recommend"])
    return root
