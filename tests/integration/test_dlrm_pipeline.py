"""The whole dlrm pipeline at a small size, as ``kedro run --pipelines=dlrm`` in a separate
process (the session's one dlrm run, started beside the two_tower run: tests/conftest.py).

Real parts all the way: the Spark generator, block MDS shards, TorchDistributor with 2 gloo
processes running the shared trainer (TorchRec sharding), kedro-mlflow on a SQLite store.
"""

from __future__ import annotations

import json

import pytest

from recsys_kedro.mds import count_block_rows

pytestmark = pytest.mark.integration

ROWS = 12000
PARAMS = {
    "dlrm": {
        "data": {
            "generator": {
                "rows": ROWS,
                "num_dense": 4,
                "num_sparse": 5,
                "cardinalities": [4, 10, 30, 60, 20],
                "multi_hot": [1, 1, 3, 1, 1],
                "seed": 3,
            },
            "num_partitions": 2,
        },
        "export": {"num_partitions": 2},
        "model": {
            "architecture": "dlrm",  # the checks below are of this one (the default is DCN)
            "embedding_dim": 8,
            "dense_arch_layer_sizes": [16, 8],
            "over_arch_layer_sizes": [16, 1],
        },
        "evaluation": {"floor_c_grid": [0.01, 0.1, 1.0]},  # three fits of the floor
        "training": {
            "epochs": 3,
            "patience": 2,
            "batch_size": 256,
            "embedding_lr": 0.1,
            "dense_lr": 0.005,
            "eval_batch_size": 1024,
        },
    }
}


@pytest.fixture(scope="module")
def pipeline_run(dlrm_run):
    """The session's dlrm run (tests/conftest.py: `kedro run` in another process)."""
    return dlrm_run.wait()


def test_metrics_compare_the_model_with_the_oracle_and_the_floor(pipeline_run):
    metrics = json.loads((pipeline_run / "data/08_reporting/dlrm_metrics.json").read_text())
    for key in (
        "test_auc", "test_logloss", "oracle_auc", "oracle_logloss", "auc_ratio", "logreg_auc",
        "auc_lift_ratio", "val_auc_ratio", "val_auc_lift_ratio", "logreg_C",
        "train_samples_per_s", "n_train", "architecture",
    ):  # fmt: skip
        assert key in metrics, key
    assert metrics["architecture"] == "dlrm" and 1 <= metrics["best_epoch"] <= 3
    assert metrics["test_auc"] > 0.6  # learnt something from the planted signal
    assert metrics["auc_ratio"] == pytest.approx(metrics["test_auc"] / metrics["oracle_auc"])
    for name in ("dlrm_auc_vs_oracle.png", "dlrm_training_curves.png"):
        assert (pipeline_run / "data/08_reporting" / name).stat().st_size > 0


def test_row_counts_agree_from_generator_to_mds(pipeline_run):
    stats = json.loads((pipeline_run / "data/08_reporting/dlrm_data_statistics.json").read_text())
    assert sum(stats[s]["rows"] for s in ("train", "validation", "test")) == ROWS
    for split in ("train", "validation", "test"):
        mds = str(pipeline_run / "data/05_model_input/dlrm/mds" / split)
        assert count_block_rows(mds) == stats[split]["rows"]


def test_mlflow_run_has_params_curves_and_a_loadable_model(pipeline_run):
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    from recsys_kedro.models.ranking import load_ranking_model

    uri = f"sqlite:///{pipeline_run / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("recsys_kedro").experiment_id])[0]
    assert run.data.params["dlrm.training.batch_size"] == "256"
    assert run.data.params["dlrm.model.architecture"] == "dlrm"
    assert len(client.get_metric_history(run.info.run_id, "dlrm.val_auc")) >= 1
    assert "dlrm.test_auc_ratio" in run.data.metrics
    assert run.data.tags["dlrm.architecture"] == "dlrm"  # a setting: a tag, not a metric
    assert "dlrm.test_n_train" not in run.data.metrics and "dlrm.n_train" in run.data.tags
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="model/dlrm.pt", tracking_uri=uri
    )
    model = load_ranking_model(local)  # a fresh model from the logged file alone
    assert model.config.jagged_features == ("sparse_2",)
    assert all(torch.isfinite(p).all() for p in model.parameters())
