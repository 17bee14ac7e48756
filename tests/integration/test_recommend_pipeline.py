"""The whole recommend funnel through Kedro's runner on the small two_tower fixture.

Real parts all the way: Spark (two-tower data stages, side features), FAISS, MDS shards,
TorchDistributor with 2 gloo processes training both the two-tower and the DLRM ranker
through the shared trainer, kedro-mlflow on a SQLite store.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from recsys_kedro.mds import count_block_rows

from .test_two_tower_pipeline import N_GENRES, N_ITEMS, N_USERS, SMALL_RUN

pytestmark = pytest.mark.integration

PARAMS = {
    "two_tower": copy.deepcopy(SMALL_RUN),
    "recommend": {
        "retrieval": {"n_candidates": 15},
        "export": {"num_partitions": 2},  # a block per partition: one for each rank
        "model": {"embedding_dim": 8, "dense_arch_layer_sizes": [16, 8]},
        "training": {"epochs": 2, "batch_size": 64, "eval_batch_size": 256},
        "evaluation": {"ks": [5, 15], "top_k": 4},
    },
}


@pytest.fixture(scope="module")
def pipeline_run(recommend_project):
    """The session's one small `recommend` run (tests/conftest.py builds it with PARAMS)."""
    return recommend_project


def test_metrics_file_reports_the_funnel_against_its_baselines(pipeline_run):
    metrics = json.loads((pipeline_run / "data/08_reporting/recommend_metrics.json").read_text())
    for key in (
        "retrieval_recall@15", "retrieval_recall@5", "retrieval_ndcg@5", "rerank_recall@5",
        "rerank_ndcg@5", "ranker_test_auc", "logreg_rerank_ndcg@5", "popularity_ndcg@5",
        "ann_recall_vs_exact", "rated_pairs_rerank_ndcg@5", "val_rerank_ndcg@5",
    ):  # fmt: skip
        assert key in metrics, key
        assert 0.0 <= metrics[key] <= 1.0
    # A 15-item list holds the same items whatever their order: recall@15 cannot change.
    assert metrics["rerank_recall@15"] == pytest.approx(metrics["retrieval_recall@15"])
    assert metrics["n_eval_users"] > 0 and metrics["epochs"] == 2
    assert (pipeline_run / "data/08_reporting/recommend_metrics_at_k.png").stat().st_size > 0
    # paired bootstrap intervals over the test users, around the reranking's differences
    for name in (
        "retrieval",
        "logreg_rerank",
        "rated_pairs_rerank",
        "popularity",
        "refit_retrieval",
    ):
        low, high = metrics[f"rerank_minus_{name}_ndcg@5_ci95"]
        assert low <= metrics["rerank_ndcg@5"] - metrics[f"{name}_ndcg@5"] <= high, name
    assert metrics["rerank_minus_retrieval_recall@15_ci95"] == [0.0, 0.0]  # the same items


def test_ranker_rows_are_exported_list_by_list(pipeline_run):
    root = pipeline_run
    report = json.loads((root / "data/08_reporting/recommend_retrieval.json").read_text())
    assert report["serve_users"] == N_USERS and report["serve_rows"] == 15 * N_USERS
    for lists in ("fit", "holdout", "serve"):
        mds = str(root / "data/05_model_input/recommend/mds" / f"{lists}_lists")
        assert count_block_rows(mds) == report[f"{lists}_rows"], lists
    summary = json.loads((root / "data/04_feature/recommend/feature_summary.json").read_text())
    cards = summary["cardinalities"]
    assert cards["user_idx"] == N_USERS and cards["item_idx"] == N_ITEMS
    assert cards["genres"] == N_GENRES + 1  # 0 = no genre ("unknown" is ignored)
    # user 7 has no side row: unknown values, counted, never dropped
    users = summary["coverage"]["users"]
    assert users["ids"] == N_USERS and users["without_side_row"] == 1
    assert users["missing"]["gender"] == 1
    assert summary["coverage"]["items"]["missing"]["genres"] == 1  # item 3: "unknown" only
    layout = summary["layout"]
    assert layout["jagged"] == ["genres"] and layout["user_statistics"][-1] == "user_mean_rating"
    serve = pd.read_parquet(root / "data/05_model_input/recommend/lists/serve")
    assert serve["genres"].map(len).min() >= 1  # a jagged feature never empty


def test_the_ablation_ranker_trains_on_the_rated_pairs(pipeline_run):
    root = pipeline_run
    stats = json.loads((root / "data/08_reporting/two_tower_split_statistics.json").read_text())
    mds = str(root / "data/05_model_input/recommend/mds/rated_pairs.train")
    assert count_block_rows(mds) == stats["train"]["interactions"]
    spec = json.loads((root / "data/06_models/recommend.rated_pairs_spec.json").read_text())["spec"]
    ranker = json.loads((root / "data/06_models/recommend_spec.json").read_text())["spec"]
    assert spec["name"] == "recommend.rated_pairs" and spec["monitor"] == "val_auc"
    assert ranker["monitor"] == "val_list_ndcg@10"  # the ranker is stopped by its lists
    # the same model, its own standardisation (from its own train rows)
    same = {k: v for k, v in spec["model"].items() if not k.startswith("dense_")}
    assert same == {k: v for k, v in ranker["model"].items() if not k.startswith("dense_")}


def test_top_k_output_uses_original_ids(pipeline_run):
    top = pd.read_parquet(pipeline_run / "data/07_model_output/recommend/top_k.parquet")
    assert list(top.columns) == ["user_id", "item_id", "rank", "retrieval_score", "ranker_score"]
    assert top.groupby("user_id").size().eq(4).all() and top["user_id"].nunique() == N_USERS
    assert set(top["item_id"].astype(int)) <= set(range(1, N_ITEMS + 1))
    first = top[top["rank"] == 1].set_index("user_id")["ranker_score"]
    fourth = top[top["rank"] == 4].set_index("user_id")["ranker_score"]
    assert (first >= fourth).all()


def test_mlflow_run_holds_both_rankers(pipeline_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{pipeline_run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("recsys_kedro")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["recommend.retrieval.n_candidates"] == "15"
    assert "recommend.test_rerank_ndcg_at_5" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "recommend.val_auc")) == 2
    # the ablation's ranker is its own curve set in the same run
    assert client.get_metric_history(run.info.run_id, "recommend.rated_pairs.train_loss")


SERVE = """
import sys
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
users = pd.read_parquet(sys.argv[2])["user_id"].drop_duplicates()
model.predict(pd.DataFrame({"user_id": users})).to_parquet(sys.argv[3])
"""


def test_the_servable_model_serves_what_the_batch_path_wrote(pipeline_run, tmp_path):
    """Loaded by MLflow in a fresh process (no Kedro, no Spark): the same top K, in the
    same order, with the same ranker scores as the pipeline's own output, so the features
    it builds in pandas are the ones the pipeline built in Spark."""
    import subprocess
    import sys

    root = pipeline_run
    model_dir = root / "data/06_models/recommender"
    batch_path = root / "data/07_model_output/recommend/top_k.parquet"
    out = tmp_path / "served.parquet"
    done = subprocess.run(
        [sys.executable, "-c", SERVE, str(model_dir), str(batch_path), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    served = pd.read_parquet(out)
    batch = pd.read_parquet(batch_path)
    assert len(served) == len(batch)
    key = ["user_id", "rank"]
    merged = batch.sort_values(key).reset_index(drop=True)
    served = served.sort_values(key).reset_index(drop=True)
    assert served["item_id"].tolist() == merged["item_id"].tolist()
    np.testing.assert_allclose(served["score"], merged["ranker_score"], rtol=1e-4, atol=1e-6)


def test_spark_batch_inference_wrote_every_users_top_k(pipeline_run):
    root = pipeline_run
    spark_out = pd.read_parquet(root / "data/07_model_output/recommend/batch_top_k")
    batch = pd.read_parquet(root / "data/07_model_output/recommend/top_k.parquet")
    key = ["user_id", "rank"]
    spark_out = spark_out.sort_values(key).reset_index(drop=True)
    batch = batch.sort_values(key).reset_index(drop=True)
    assert spark_out["user_id"].nunique() == N_USERS
    assert spark_out["item_id"].tolist() == batch["item_id"].tolist()
    np.testing.assert_allclose(spark_out["score"], batch["ranker_score"], rtol=1e-4, atol=1e-6)


def test_the_refit_baseline_learns_from_train_and_validation(pipeline_run):
    """The two-tower trained again on both periods, for the epochs its first run kept."""
    root = pipeline_run
    stats = json.loads((root / "data/08_reporting/two_tower_split_statistics.json").read_text())
    rows = sum(stats[s]["interactions"] for s in ("train", "validation"))
    assert count_block_rows(str(root / "data/05_model_input/recommend/mds/refit.train")) == rows
    first = json.loads((root / "data/06_models/two_tower_training_summary.json").read_text())
    refit = json.loads((root / "data/06_models/recommend.refit_training_summary.json").read_text())
    assert refit["epochs"] == refit["best_epoch"] == first["best_epoch"]  # no early stop
    assert refit["monitor"] is None  # the last epoch is kept
