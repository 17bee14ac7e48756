"""`kedro run --pipelines=two_tower_tune` on a tiny space (2 trials) through Kedro's runner:
each trial trains through TorchDistributor (2 gloo processes); kedro-mlflow on SQLite. The
pipeline's data stages are checked by the two_tower tests (they are the same nodes); that the
tune pipeline wires them is checked in tests/pipelines."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import yaml

from .conftest import make_project, run_project
from .test_two_tower_pipeline import SMALL_RUN

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tune_run(tmp_path_factory, two_tower_project):
    """The study on a copy of the session's two_tower project: `two_tower_tune` shares the
    two_tower pipeline's ingestion, features and export stages (same namespace, same
    datasets), which that run already executed with the same parameters, so only the tuning
    node runs here."""
    root = make_project(tmp_path_factory.mktemp("tune"))
    shutil.copytree(two_tower_project[0] / "data", root / "data")
    runtime_params = {
        "two_tower": {
            **copy.deepcopy(SMALL_RUN),
            "tune": {
                "n_trials": 2,
                "epochs": 1,
                "timeout_s": 600,
                "space": [
                    {"name": "training.temperature", "type": "float", "low": 0.05, "high": 0.5},
                    {"name": "model.embedding_dim", "type": "categorical", "choices": [8, 16]},
                ],
            },
        }
    }
    run_project(
        root,
        runtime_params,
        pipeline_name="two_tower_tune",
        node_names=["two_tower.tuning.tune_two_tower"],
    )
    return root


def test_study_trials_and_best_params_are_written(tune_run):
    study = json.loads((tune_run / "data/08_reporting/two_tower_tune_trials.json").read_text())
    assert len(study["trials"]) == 2 and study["objective"] == "val_ndcg@10"
    done = [t for t in study["trials"] if t["state"] == "COMPLETE"]
    assert study["best_value"] == max(t["value"] for t in done)
    best = yaml.safe_load((tune_run / "data/08_reporting/two_tower_best_params.yml").read_text())
    # a conf/local override: the best trial's values under their dotted paths
    best_trial = study["trials"][study["best_trial"]]["params"]
    assert best["two_tower"]["training"]["temperature"] == best_trial["training.temperature"]
    assert best["two_tower"]["model"]["embedding_dim"] == best_trial["model.embedding_dim"]
    assert (tune_run / "data/08_reporting/two_tower_tune_history.png").stat().st_size > 0
    # That test data never reaches the study is checked on the node's inputs (no test split
    # among them: tests/pipelines/test_two_tower_tune_pipeline.py), not on its output, which
    # the node filters to validation metrics itself (a check here could not fail).


def test_each_trial_is_a_nested_mlflow_run(tune_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tune_run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("recsys_kedro")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all("val_ndcg_at_10" in r.data.metrics for r in children)
    assert "two_tower.tune.n_trials" in parents[0].data.params
