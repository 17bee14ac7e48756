"""The funnel as an MLflow pyfunc model: saved, then loaded in a fresh process (no Kedro)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recsys_kedro.data.feature_schema import FeatureLayout
from recsys_kedro.models.ranking import RankingConfig, build_ranking_model, make_model_file
from recsys_kedro.retrieval import IndexConfig, build_index, serialize_index
from recsys_kedro.serving.recommender import FunnelRecommender

N_USERS, N_ITEMS, DIM, TOP_K = 8, 30, 4, 3
DENSE = (
    "retrieval_score", "retrieval_log_rank", "user_log_activity", "user_mean_rating",
    "item_log_popularity", "item_mean_rating", "genres_affinity",
)  # fmt: skip
SPARSE = (
    "user_idx", "item_idx", "age_bucket", "gender", "occupation", "zip_prefix", "year_bucket",
    "genres",
)  # fmt: skip


CARDINALITIES = (N_USERS, N_ITEMS, 3, 3, 3, 3, 3, 4)
LAYOUT = FeatureLayout(
    user_sparse=("age_bucket", "gender", "occupation", "zip_prefix"),
    item_sparse=("year_bucket", "genres"),
    jagged=("genres",),
    user_statistics=("user_log_activity", "user_mean_rating"),
    item_statistics=("item_log_popularity", "item_mean_rating"),
    affinities=(("user_genres_share", "genres", "genres_affinity"),),
    cardinalities=dict(zip(SPARSE, CARDINALITIES, strict=True)),
)
assert (
    LAYOUT.sparse_features == SPARSE
    and ("retrieval_score", "retrieval_log_rank", *LAYOUT.dense_features) == DENSE
)


def _inputs(index: IndexConfig | None = None) -> dict:
    rng = np.random.default_rng(0)
    users = rng.normal(size=(N_USERS, DIM)).astype(np.float32)
    items = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    config = RankingConfig(
        dense_features=DENSE,
        sparse_features=SPARSE,
        cardinalities=CARDINALITIES,
        jagged_features=("genres",),
        embedding_dim=4,
        dense_arch_layer_sizes=(8, 4),
        over_arch_layer_sizes=(8, 1),
    )
    user_features = pd.DataFrame(
        {
            "age_bucket": rng.integers(0, 3, N_USERS),
            "gender": rng.integers(0, 3, N_USERS),
            "occupation": rng.integers(0, 3, N_USERS),
            "zip_prefix": rng.integers(0, 3, N_USERS),
            "user_log_activity": rng.random(N_USERS).astype(np.float32),
            "user_mean_rating": rng.random(N_USERS).astype(np.float32),
            "user_genres_share": [
                rng.dirichlet(np.ones(4)).astype(np.float32) for _ in range(N_USERS)
            ],
        }
    )
    item_features = pd.DataFrame(
        {
            "year_bucket": rng.integers(0, 3, N_ITEMS),
            "genres": [rng.choice(4, rng.integers(1, 3), replace=False) for _ in range(N_ITEMS)],
            "item_log_popularity": rng.random(N_ITEMS).astype(np.float32),
            "item_mean_rating": rng.random(N_ITEMS).astype(np.float32),
        }
    )
    popularity = rng.integers(0, 50, N_ITEMS)
    return dict(
        user_ids=np.array([f"u{u}" for u in range(N_USERS)]),
        item_ids=np.array([f"i{i}" for i in range(N_ITEMS)]),
        user_embeddings=users,
        index_bytes=serialize_index(build_index(items, index or IndexConfig())),
        ranker=make_model_file(config, build_ranking_model(config).state_dict()),
        user_features=user_features,
        item_features=item_features,
        seen_users=np.array([0, 0, 0]),
        seen_items=np.array([1, 2, 3]),
        item_popularity=popularity,
        n_candidates=10,
        top_k=TOP_K,
        layout=LAYOUT.to_dict(),
    )


SCRIPT = """
import json, sys
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
out = {}
users = pd.DataFrame({"user_id": ["u0", "stranger", "u5", "u0"]})
out["main"] = model.predict(users).to_dict("list")
out["empty"] = list(model.predict(pd.DataFrame({"user_id": []})).columns)
for name, bad in (("type", [1, 2]), ("column", pd.DataFrame({"uid": ["u0"]}))):
    try:
        model.predict(bad)
        out[name] = "no error"
    except Exception as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import mlflow.pyfunc

    model = FunnelRecommender(**_inputs())
    path = tmp_path_factory.mktemp("served") / "recommender"
    # The requirements are declared, not inferred: inference loads the model in yet another
    # process, and this test is about serving, not packaging.
    mlflow.pyfunc.save_model(str(path), python_model=model, pip_requirements=["mlflow"])
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return model, json.loads(done.stdout.strip().splitlines()[-1])


def test_a_fresh_process_serves_top_k_per_user_in_input_order(served):
    model, out = served
    main = pd.DataFrame(out["main"])
    assert list(main.columns) == ["user_id", "item_id", "rank", "score"]
    assert main["user_id"].tolist() == ["u0"] * TOP_K + ["stranger"] * TOP_K + ["u5"] * TOP_K
    assert main.groupby("user_id")["rank"].apply(list).eq([[1, 2, 3]] * 3).all()
    u0 = main[main["user_id"] == "u0"]
    assert not {"i1", "i2", "i3"} & set(u0["item_id"])  # seen items are never served
    assert (np.diff(u0["score"].to_numpy()) <= 0).all()
    # The same answer as the in-memory model (nothing lost in the round trip).
    local = model.predict(None, pd.DataFrame({"user_id": ["u0", "stranger", "u5"]}))
    np.testing.assert_allclose(main["score"], local["score"], rtol=1e-6)
    assert main["item_id"].tolist() == local["item_id"].tolist()


def test_an_unknown_user_gets_the_popularity_fallback(served):
    _, out = served
    main = pd.DataFrame(out["main"])
    stranger = main[main["user_id"] == "stranger"]
    popularity = _inputs()["item_popularity"]
    want = sorted(range(N_ITEMS), key=lambda i: (-popularity[i], i))[:TOP_K]
    assert stranger["item_id"].tolist() == [f"i{i}" for i in want]
    np.testing.assert_allclose(stranger["score"], popularity[want] / popularity.sum(), rtol=1e-6)


def test_empty_and_bad_inputs(served):
    _, out = served
    assert out["empty"] == ["user_id", "item_id", "rank", "score"]
    assert "pandas DataFrame" in out["type"] or "user_id" in out["type"]
    assert "'user_id' column" in out["column"]


@pytest.mark.parametrize(
    "index",
    [IndexConfig(), IndexConfig(kind="hnsw", hnsw_m=8, ef_construction=40, ef_search=4)],
    ids=["exact", "hnsw"],
)
def test_spark_batch_inference_matches_the_model_for_every_user(spark, index):
    from recsys_kedro.pipelines.recommend.nodes import recommend_all_users
    from recsys_kedro.serving.batch import recommend_all

    model = FunnelRecommender(**_inputs(index))
    ids = [f"u{u}" for u in range(N_USERS)] + ["stranger"]
    users = spark.createDataFrame(pd.DataFrame({"user_id": ids})).repartition(3)
    got = recommend_all(users, model, batch_users=2).toPandas()
    want = model.predict(None, pd.DataFrame({"user_id": ids}))
    key = ["user_id", "rank"]
    got = got.sort_values(key).reset_index(drop=True)
    want = want.sort_values(key).reset_index(drop=True)
    assert got["item_id"].tolist() == want["item_id"].tolist()
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-6)
    assert len(got) == TOP_K * len(ids)
    via_node = recommend_all_users(users, model).count()  # the node: same path
    assert via_node == len(got)
    with pytest.raises(ValueError, match="'user_id' column"):
        recommend_all(users.withColumnRenamed("user_id", "uid"), model)
