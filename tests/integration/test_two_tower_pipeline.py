"""The whole two_tower pipeline through Kedro's runner, on a small generated fixture.

Real parts all the way: the project's settings and hooks, the Spark session, MDS shards,
TorchDistributor with 2 gloo processes, TorchRec sharding, kedro-mlflow on a SQLite store.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_kedro.mds import count_block_rows, read_block_metadata
from recsys_kedro.output_lock import OutputLocks, OutputsInUseError

from .conftest import make_project, run_project

pytestmark = pytest.mark.integration

N_USERS, N_ITEMS = 60, 45


def write_fixture_inter(path: Path) -> int:
    """A RecBole ``.inter`` file in which users prefer items of their own cluster.

    Popular items exist (item ids skewed) so the popularity baseline is not trivial; a model
    that learns the clusters beats it. Returns the number of distinct (user, item) pairs.
    """
    rng = np.random.default_rng(3)
    rows = []
    for u in range(1, N_USERS + 1):
        items = rng.choice(np.arange(1, N_ITEMS + 1), size=25, replace=False)
        for t, i in enumerate(items):
            liked = (u % 3) == (i % 3)
            rating = rng.choice([4, 5]) if liked else rng.choice([1, 2, 3])
            rows.append((u, i, float(rating), 880000000 + 1000 * u + t))
    rows.append(rows[0][:2] + (3.0, rows[0][3] - 5))  # an older duplicate rating: deduplicated
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for u, i, r, ts in rows:
            f.write(f"{u}\t{i}\t{r}\t{ts}\n")
    return len(rows) - 1


GENRES = ("Comedy Romance", "Action Thriller", "Sci-Fi Film-Noir")  # one per item cluster
N_GENRES = len({g for pair in GENRES for g in pair.split()})


def write_side_files(raw: Path) -> None:
    """``ml-100k.user`` / ``.item`` for the fixture's ids in RecBole's atomic format (the
    side tables of conf/base's feature schema): an item's genres say its cluster; user 7
    has no profile and item 3 has only the "unknown" genre (both must be handled)."""
    rng = np.random.default_rng(5)
    raw.mkdir(parents=True, exist_ok=True)
    with (raw / "ml-100k.user").open("w") as f:
        f.write("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n")
        for u in range(1, N_USERS + 1):
            if u != 7:
                job = rng.choice(["artist", "doctor", "student"])
                f.write(f"{u}\t{rng.integers(15, 70)}\t{rng.choice(['F', 'M'])}\t{job}\t0{u:04d}\n")
    lines = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    lines += [
        f"{i}\tFixture Movie {i}\t{1990 + i % 7}\t{'unknown' if i == 3 else GENRES[i % 3]}"
        for i in range(1, N_ITEMS + 1)
    ]
    (raw / "ml-100k.item").write_text("\n".join(lines) + "\n")


#: A two_tower run small enough for a test on the fixture data: the session's one two_tower
#: run (tests/conftest.py), which the notebook, cluster and recommend tests read too.
SMALL_RUN = {
    "features": {"split": {"test_size": 4, "validation_size": 2}},
    "training": {
        "epochs": 2,
        "batch_size": 64,
        "eval_batch_size": 256,
        "temperature": 0.1,
        "embedding_lr": 0.1,
        "dense_lr": 0.005,
    },
    # side features on: the towers' sharded side tables get their one real 2-rank run here
    "model": {
        "embedding_dim": 16,
        "layer_sizes": [32, 16],
        "side_features": True,
        "item_id_dropout": 0.1,
    },
    "evaluation": {  # ALS with one trial at one point: the search is tested in tests/models
        "als": {
            "max_iter": 3,
            "num_blocks": 2,
            "search": {
                "n_trials": 1,
                "space": [
                    {"name": "rank", "choices": [8], "type": "categorical"},
                    {"name": "reg_param", "choices": [0.1], "type": "categorical"},
                    {"name": "alpha", "choices": [1.0], "type": "categorical"},
                ],
            },
        }
    },
}


@pytest.fixture(scope="module")
def pipeline_run(two_tower_project):
    """The session's one small `two_tower` run (tests/conftest.py builds it with SMALL_RUN)."""
    return two_tower_project


def test_metrics_file_has_every_key(pipeline_run):
    root, _ = pipeline_run
    metrics = json.loads((root / "data/08_reporting/two_tower_metrics.json").read_text())
    for key in (
        "test_auc", "recall@10", "ndcg@10", "recall@100", "popularity_recall@10",
        "popularity_ndcg@10", "train_samples_per_s", "epochs", "n_train", "n_test",
        "als_recall@10", "als_ndcg@100", "als_rank",
    ):  # fmt: skip
        assert key in metrics, key
    summary = json.loads((root / "data/06_models/two_tower_training_summary.json").read_text())
    ndcg = summary["history"]["val_ndcg@10"]
    assert metrics["epochs"] == 2 == len(ndcg)
    assert metrics["best_epoch"] == int(np.argmax(ndcg)) + 1  # chosen on validation
    assert 0.0 <= metrics["recall@10"] <= 1.0 and metrics["train_samples_per_s"] > 0
    assert metrics["test_auc"] > 0.6  # the clusters are learnable within two epochs
    assert (root / "data/08_reporting/two_tower_metrics_at_k.png").stat().st_size > 0
    als = json.loads((root / "data/08_reporting/two_tower_als_baseline.json").read_text())
    assert als["enabled"] and len(als["validation"]) == 1  # one trial
    assert als["params"] == {"rank": 8, "reg_param": 0.1, "alpha": 1.0, "max_iter": 3}
    assert als["test"]["ndcg@10"] == metrics["als_ndcg@10"]
    assert (root / "data/08_reporting/two_tower_training_curves.png").stat().st_size > 0


def test_row_counts_agree_from_raw_to_mds(pipeline_run):
    root, n_pairs = pipeline_run
    stats = json.loads((root / "data/08_reporting/two_tower_split_statistics.json").read_text())
    total = sum(stats[s]["interactions"] for s in ("train", "validation", "test"))
    assert total == n_pairs  # deduplicated, nothing lost between ingestion and the split
    assert stats["n_users"] == N_USERS
    for split in ("train", "validation", "test"):
        mds = str(root / "data/05_model_input/two_tower/mds" / split)
        assert read_block_metadata(mds)["layout"] == "block"  # the default training input
        assert count_block_rows(mds) == stats[split]["interactions"]
    assert stats["test"]["interactions"] == 4 * N_USERS
    assert stats["validation"]["interactions"] == 2 * N_USERS


def test_embeddings_translate_back_to_ids(pipeline_run):
    root, _ = pipeline_run
    users = pd.read_parquet(root / "data/07_model_output/user_embeddings.parquet")
    items = pd.read_parquet(root / "data/07_model_output/item_embeddings.parquet")
    assert len(users) == N_USERS and users["user_idx"].tolist() == list(range(N_USERS))
    assert set(users["user_id"].astype(int)) == set(range(1, N_USERS + 1))
    assert len(items) == N_ITEMS and len(items["embedding"].iloc[0]) == 16


def test_mlflow_run_has_params_curves_and_artifacts(pipeline_run):
    import mlflow
    from mlflow.tracking import MlflowClient

    root, _ = pipeline_run
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("recsys_kedro")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["two_tower.training.epochs"] == "2"
    assert run.data.params["two_tower.ingestion.label.threshold"] == "4.0"
    history = client.get_metric_history(run.info.run_id, "two_tower.train_loss")
    assert [m.step for m in history] == [1, 2]
    assert "two_tower.test_recall_at_10" in run.data.metrics
    assert "two_tower.test_als_ndcg_at_10" in run.data.metrics
    assert "two_tower.val_auc" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "two_tower.val_ndcg_at_10")) == 2
    # counts and settings are tags, not metrics
    assert run.data.tags["two_tower.n_train"] == str(
        json.loads((root / "data/08_reporting/two_tower_metrics.json").read_text())["n_train"]
    )
    assert "two_tower.test_n_train" not in run.data.metrics
    assert "two_tower.als_rank" in run.data.tags
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "embeddings", "plots"} <= artifacts
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path="model/two_tower.pt",
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
    )
    from recsys_kedro.models.two_tower import load_two_tower

    model = load_two_tower(local)
    assert model.ebc.embedding_bags["t_user"].weight.shape == (N_USERS, 16)


def test_a_run_of_a_live_runs_outputs_stops_before_it_starts(tmp_path):
    """Two runs writing the same datasets under one data root: the second stops at its
    first hook, naming the first, before Spark or any node (tests/test_output_lock.py)."""
    root = make_project(tmp_path)
    live = OutputLocks(str((root / "data").resolve()))  # what a live two_tower run holds
    live.acquire(["two_tower.metrics", "two_tower.model"], run="kedro run --pipelines=two_tower")
    try:
        with pytest.raises(OutputsInUseError, match=r"'two_tower.model'.*=two_tower"):
            run_project(root, {}, pipeline_name="recommend")
    finally:
        live.release()
    assert not (root / "data" / "02_intermediate").exists()  # nothing ran
