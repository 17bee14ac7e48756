"""MlflowTrialsDataset: a JSON file and one nested MLflow run per trial (real SQLite store)."""

from __future__ import annotations

import mlflow
import pytest
from kedro.io.core import DatasetError
from mlflow.tracking import MlflowClient

from recsys_kedro.datasets.mlflow_trials import MlflowTrialsDataset

STUDY = {
    "objective": "val_ndcg@10",
    "trials": [
        {"number": 0, "state": "COMPLETE", "params": {"training.lr": 0.1},
         "metrics": {"val_ndcg@10": 0.12}, "seconds": 3.0},
        {"number": 1, "state": "FAIL", "params": {"training.lr": 9.0}, "metrics": {},
         "error": "FloatingPointError: the loss is nan", "seconds": 1.0},
    ],
}  # fmt: skip


def test_trials_become_nested_runs_and_a_json_file(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        ds = MlflowTrialsDataset(filepath=str(tmp_path / "study.json"))
        with mlflow.start_run() as parent:
            ds.save(STUDY)
            assert mlflow.active_run().info.run_id == parent.info.run_id  # back to the parent
        client = MlflowClient(tracking_uri=uri)
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        )
        by_name = {r.info.run_name: r for r in children}
        assert set(by_name) == {"trial-0", "trial-1"}
        assert by_name["trial-0"].data.metrics["val_ndcg_at_10"] == 0.12
        assert by_name["trial-0"].data.params["training.lr"] == "0.1"
        assert by_name["trial-1"].info.status == "FAILED"
        assert "nan" in by_name["trial-1"].data.tags["error"]
        assert ds.load() == STUDY
    finally:
        mlflow.set_tracking_uri(None)


def test_a_study_without_trials_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="'trials' list"):
        MlflowTrialsDataset(filepath=str(tmp_path / "s.json")).save({"best": 1})
