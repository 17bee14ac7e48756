"""Metrics files split into MLflow metrics (model quality) and run tags (counts, settings)."""

from __future__ import annotations

from recsys_kedro.reporting import metrics_and_tags, mlflow_metric_name


def test_mlflow_metric_names_have_no_at_sign():
    assert mlflow_metric_name("val_ndcg@10") == "val_ndcg_at_10"
    assert mlflow_metric_name("als_recall@100") == "als_recall_at_100"


def test_counts_and_settings_become_tags_and_quality_metrics_stay():
    metrics, tags = metrics_and_tags(
        {
            "test_auc": 0.7,
            "ndcg@10": 0.12,
            "train_samples_per_s": 5e4,
            "n_train": 85855,
            "best_epoch": 4,
            "architecture": "dlrm",
            "flag": True,
        }
    )
    assert metrics == {
        "test_auc": {"step": 0, "value": 0.7},
        "test_ndcg_at_10": {"step": 0, "value": 0.12},
        "test_train_samples_per_s": {"step": 0, "value": 5e4},
    }
    assert tags == {"n_train": 85855, "best_epoch": 4, "architecture": "dlrm", "flag": True}
