"""MlflowTagsDataset writes run tags to a real (file) MLflow tracking store."""

from __future__ import annotations

import mlflow
import pytest
from kedro.io.core import DatasetError

from recsys_kedro.datasets.mlflow_tags import MlflowTagsDataset


@pytest.fixture
def tracking(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield
    mlflow.set_tracking_uri(None)


def test_saves_prefixed_tags_on_the_active_run(tracking):
    ds = MlflowTagsDataset(prefix="two_tower")
    with mlflow.start_run() as run:
        ds.save({"n_train": 85855, "architecture": "dlrm"})
        assert ds.load() == {"n_train": "85855", "architecture": "dlrm"}
    tags = mlflow.get_run(run.info.run_id).data.tags
    assert tags["two_tower.n_train"] == "85855"
    metrics = mlflow.get_run(run.info.run_id).data.metrics
    assert "two_tower.n_train" not in metrics


def test_outside_a_run_saving_does_nothing(tracking):
    MlflowTagsDataset(prefix="x").save({"n": 1})  # no error, no run created
    assert mlflow.active_run() is None


def test_nested_values_are_refused(tracking):
    with mlflow.start_run(), pytest.raises(DatasetError, match="nested"):
        MlflowTagsDataset().save({"history": [1, 2]})
