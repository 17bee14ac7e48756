"""recsys_kedro.evaluation.distributed: the Spark figures equal the one-process figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_kedro.evaluation.distributed import (
    DotProduct,
    ItemScores,
    collect_per_user,
    metric_names,
    pair_scores,
    summarise,
    user_topk_metrics,
)
from recsys_kedro.evaluation.retrieval import (
    embedding_score_fn,
    full_catalogue_topk_metrics,
    popularity_score_fn,
)

ML100K = Path(__file__).resolve().parents[2] / "data" / "01_raw" / "ml-100k" / "ml-100k.inter"
KS = [10, 20, 100, 5000]  # 5000: K beyond the catalogue


@pytest.fixture(scope="module")
def ml100k():
    """MovieLens-100K's ratings, indexed; each user's last 10 % in time is its test part
    (positives: rating >= 4), the rest excluded (its training items)."""
    frame = pd.read_csv(ML100K, sep="\t")
    frame.columns = ["user", "item", "rating", "ts"]
    frame["user_idx"] = frame["user"].rank(method="dense").astype(np.int64) - 1
    frame["item_idx"] = frame["item"].rank(method="dense").astype(np.int64) - 1
    order = frame.sort_values(["user_idx", "ts", "item_idx"])
    position = order.groupby("user_idx").cumcount() / order.groupby("user_idx")["ts"].transform(
        "size"
    )
    test = order[position >= 0.9]
    train = order[position < 0.9]
    positives = test[test["rating"] >= 4][["user_idx", "item_idx"]]
    # some test positives are also "train" pairs: excluded, so not relevant (a pinned rule)
    extra = positives.sample(frac=0.05, random_state=0)
    excluded = pd.concat([train[["user_idx", "item_idx"]], extra], ignore_index=True)
    return frame, positives, excluded


def _driver(score_fn, n_items, positives, excluded):
    return full_catalogue_topk_metrics(
        score_fn,
        n_items,
        positives["user_idx"].to_numpy(),
        positives["item_idx"].to_numpy(),
        excluded["user_idx"].to_numpy(),
        excluded["item_idx"].to_numpy(),
        ks=KS,
        batch_size=128,
        per_user=True,
    )


def _assert_equal(spark_rows: pd.DataFrame, summary: dict, driver: dict) -> None:
    spark_rows = spark_rows.sort_values("user_idx")
    np.testing.assert_array_equal(spark_rows["user_idx"].to_numpy(), driver["per_user"]["users"])
    for name in metric_names(KS):
        np.testing.assert_allclose(
            spark_rows[name].to_numpy(), driver["per_user"][name], rtol=0, atol=1e-12
        )
        assert abs(summary[name] - driver[name]) <= 1e-9, name
    assert summary["n_eval_users"] == driver["n_eval_users"] > 800


def test_ml100k_spark_metrics_equal_the_one_process_metrics(spark, ml100k):
    """Both scorers the two_tower pipeline reports (the model's dot product and the
    popularity counts, whose many ties the lower item index breaks), on MovieLens-100K,
    spread over several partitions."""
    frame, positives, excluded = ml100k
    n_users, n_items = frame["user_idx"].max() + 1, frame["item_idx"].max() + 1
    rng = np.random.default_rng(0)
    users = rng.normal(size=(n_users, 16)).astype(np.float32)
    items = rng.normal(size=(n_items, 16)).astype(np.float32)
    relevant = spark.createDataFrame(positives).repartition(3)
    masked = spark.createDataFrame(excluded).repartition(4)
    vectors = spark.createDataFrame(  # plain lists: whatever the session's Arrow setting
        [(u, users[u].tolist()) for u in range(n_users)], "user_idx long, embedding array<float>"
    )

    per_user = user_topk_metrics(
        relevant, masked, DotProduct(items), n_items, KS, user_vectors=vectors, batch_size=100
    ).cache()
    driver = _driver(embedding_score_fn(users, items), n_items, positives, excluded)
    _assert_equal(per_user.toPandas(), summarise(per_user, KS), driver)
    collected = collect_per_user(per_user, KS)  # what a node reports, with its intervals
    for name in metric_names(KS):
        assert abs(collected[name] - driver[name]) <= 1e-9, name
        np.testing.assert_allclose(
            collected["per_user"][name], driver["per_user"][name], atol=1e-12
        )
    np.testing.assert_array_equal(collected["per_user"]["users"], driver["per_user"]["users"])

    # the AUC's inputs: every labelled pair's score, as the driver's dot product gives it
    labelled = frame.assign(label=(frame["rating"] >= 4).astype(int))
    scored = pair_scores(spark.createDataFrame(labelled[["user_idx", "item_idx", "label"]]),
                         vectors, items).toPandas()  # fmt: skip
    expected = np.einsum("ij,ij->i", users[labelled["user_idx"]], items[labelled["item_idx"]])
    pairs = sorted(zip(labelled["label"], expected, strict=True))
    assert sorted(zip(scored["label"], scored["score"], strict=True)) == pairs

    train_items = excluded["item_idx"].to_numpy()
    counts = np.bincount(train_items, minlength=n_items).astype(np.float64)
    per_user = user_topk_metrics(relevant, masked, ItemScores(counts), n_items, KS).cache()
    driver = _driver(popularity_score_fn(train_items, n_items), n_items, positives, excluded)
    _assert_equal(per_user.toPandas(), summarise(per_user, KS), driver)


def test_missing_vectors_and_nothing_to_evaluate_are_named(spark):
    relevant = spark.createDataFrame([(0, 1), (1, 2)], "user_idx long, item_idx long")
    vectors = spark.createDataFrame([(0, [1.0, 0.0])], "user_idx long, embedding array<float>")
    items = np.eye(3, 2, dtype=np.float32)
    none = spark.createDataFrame([], "user_idx long, item_idx long")
    with pytest.raises(ValueError, match="give user_vectors"):
        user_topk_metrics(relevant, none, DotProduct(items), 3, [2])
    with pytest.raises(Exception, match=r"users \[1\] have relevant test items but no vector"):
        user_topk_metrics(relevant, none, DotProduct(items), 3, [2], user_vectors=vectors).count()
    # every relevant pair is also excluded: no user is left to evaluate
    per_user = user_topk_metrics(relevant, relevant, ItemScores(np.ones(3)), 3, [2])
    with pytest.raises(ValueError, match="No user can be evaluated"):
        summarise(per_user, [2])
