"""Nodes of the recommend pipeline on small synthetic data (real FAISS, Spark and TorchRec)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_kedro.data.feature_schema import FeatureLayout
from recsys_kedro.evaluation.retrieval import embedding_score_fn, full_catalogue_topk_metrics
from recsys_kedro.models import two_tower as tt
from recsys_kedro.models.ranking import build_ranking_model, make_model_file
from recsys_kedro.pipelines.recommend import create_pipeline
from recsys_kedro.pipelines.recommend.nodes import (
    RETRIEVAL_DENSE,
    build_retrieval_index,
    package_recommender,
    ranker_spec,
    rated_pair_rows,
    refit_retrieval_metrics,
    refit_rows,
    refit_settings,
    rerank_and_evaluate,
    retrieve_candidates,
    top_k_table,
)
from recsys_kedro.training.specs import spec_from_dict

N_USERS, N_ITEMS, DIM = 40, 60, 8
INDEX = {"kind": "exact"}
RETRIEVAL = {"n_candidates": 20, "holdout_fraction": 0.25, "seed": 0, "index": INDEX}


def _embeddings(n: int, idx: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return pd.DataFrame({idx: np.arange(n), "embedding": list(vectors)})


def _split(seed: int, per_user: int, positive_rate: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (u, i, int(rng.random() < positive_rate))
        for u in range(N_USERS)
        for i in rng.choice(N_ITEMS, per_user, replace=False)
    ]
    return pd.DataFrame(rows, columns=["user_idx", "item_idx", "label"])


@pytest.fixture(scope="module")
def data():
    users, items = _embeddings(N_USERS, "user_idx", 0), _embeddings(N_ITEMS, "item_idx", 1)
    train, validation, test = _split(2, 10, 0.5), _split(3, 3, 0.6), _split(4, 3, 0.6)
    # No pair twice across the splits (the two-tower's split guarantees it).
    validation = validation.merge(train[["user_idx", "item_idx"]], how="left", indicator=True)
    validation = validation[validation["_merge"] == "left_only"].drop(columns="_merge")
    seen = pd.concat([train, validation])[["user_idx", "item_idx"]]
    test = test.merge(seen, how="left", indicator=True)
    test = test[test["_merge"] == "left_only"].drop(columns="_merge")
    return users, items, train, validation, test


@pytest.fixture(scope="module")
def lists(data):
    users, items, train, validation, test = data
    index = build_retrieval_index(items, INDEX)
    return retrieve_candidates(users, items, index, train, validation, test, RETRIEVAL)


def _pairs(frame):
    return set(zip(frame["user_idx"], frame["item_idx"], strict=True))


def test_lists_exclude_what_the_user_saw_before_their_period(data, lists):
    _, _, train, validation, test = data
    candidates, _ = lists
    fit = candidates[candidates["list"].isin(["fit", "holdout"])]
    serve = candidates[candidates["list"] == "serve"]
    assert not _pairs(fit) & _pairs(train)
    assert not _pairs(serve) & (_pairs(train) | _pairs(validation))
    # Fit lists: users with validation positives, labelled by them; serve: every user.
    assert set(fit["user_idx"]) == set(validation.loc[validation["label"] == 1, "user_idx"])
    assert set(serve["user_idx"]) == set(range(N_USERS))
    val_pos = _pairs(validation[validation["label"] == 1])
    assert all(
        (p in val_pos) == bool(y) for p, y in zip(_pairs_list(fit), fit["label"], strict=True)
    )
    test_pos = _pairs(test[test["label"] == 1])
    assert all(
        (p in test_pos) == bool(y) for p, y in zip(_pairs_list(serve), serve["label"], strict=True)
    )
    assert serve.groupby("user_idx").size().eq(20).all()


def _pairs_list(frame):
    return list(zip(frame["user_idx"], frame["item_idx"], strict=True))


def test_holdout_users_are_kept_apart_and_the_report_counts_them(lists):
    candidates, report = lists
    fit_users = set(candidates.loc[candidates["list"] == "fit", "user_idx"])
    held_users = set(candidates.loc[candidates["list"] == "holdout", "user_idx"])
    assert fit_users and held_users and not fit_users & held_users
    assert report["holdout_users"] == len(held_users) and report["serve_users"] == N_USERS
    assert report["ann_recall_vs_exact"] == 1.0 and report["index_kind"] == "exact"


def test_an_approximate_index_reports_its_recall_against_exact_search(data):
    users, items, train, validation, test = data
    params = {**RETRIEVAL, "index": {"kind": "ivf", "nlist": 1, "nprobe": 1}}
    index = build_retrieval_index(items, params["index"])
    _, report = retrieve_candidates(users, items, index, train, validation, test, params)
    assert report["index_kind"] == "ivf"
    assert report["ann_recall_vs_exact"] == pytest.approx(1.0)  # one cell: exhaustive
    bad = {**RETRIEVAL, "n_candidates": 0}
    with pytest.raises(ValueError, match="n_candidates"):
        retrieve_candidates(users, items, index, train, validation, test, bad)
    with pytest.raises(ValueError, match="parameters_recommend.yml"):
        build_retrieval_index(items, {"kind": "lsh"})


LAYOUT = FeatureLayout(
    user_sparse=("age_bucket", "gender", "occupation", "zip_prefix"),
    item_sparse=("year_bucket", "genres"),
    jagged=("genres",),
    user_dense=("income", "income_missing"),
    user_statistics=("user_log_activity", "user_mean_rating"),
    item_statistics=("item_log_popularity", "item_mean_rating"),
    affinities=(("user_genres_share", "genres", "genres_affinity"),),
    cardinalities={
        "user_idx": N_USERS, "item_idx": N_ITEMS, "age_bucket": 5, "gender": 5,
        "occupation": 5, "zip_prefix": 5, "year_bucket": 5, "genres": 4,
    },
)  # fmt: skip
SPARSE_FEATURES = LAYOUT.sparse_features
DENSE_FEATURES = (*RETRIEVAL_DENSE, *LAYOUT.dense_features)


def _summary():
    return {"cardinalities": dict(LAYOUT.cardinalities), "layout": LAYOUT.to_dict()}


MODEL = {"architecture": "dlrm", "embedding_dim": 8, "dense_arch_layer_sizes": [16, 8]}
TRAINING = {"monitor": "val_list_ndcg@10", "validation": {"ks": [10]}}


def _train_rows(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: rng.normal(3.0, 2.0, n) for c in DENSE_FEATURES})


def test_ranker_spec_uses_every_side_feature():
    train = _train_rows()
    scaled = {**MODEL, "standardize_dense": True}
    spec = spec_from_dict(ranker_spec(_summary(), train, scaled, TRAINING))
    assert spec.name == "recommend"
    assert spec.model.sparse_features == SPARSE_FEATURES
    assert spec.model.dense_features == DENSE_FEATURES
    assert spec.model.jagged_features == ("genres",)
    assert dict(zip(SPARSE_FEATURES, spec.model.cardinalities, strict=True))["item_idx"] == N_ITEMS
    # The dense input is standardised by the model with its train rows' statistics.
    np.testing.assert_allclose(spec.model.dense_mean, train.mean().to_numpy())
    np.testing.assert_allclose(spec.model.dense_std, train.std(ddof=0).to_numpy())
    raw = spec_from_dict(ranker_spec(_summary(), train, MODEL, TRAINING))
    assert raw.model.dense_mean is None  # off by default
    # The epoch is chosen by the holdout lists' NDCG, the metric the ranker is for.
    assert spec.monitor == "val_list_ndcg@10" and spec.list_ks == (10,)
    assert spec.list_key == "user_idx" and spec.list_item == "item_idx"
    with pytest.raises(ValueError, match="recommend.training"):
        ranker_spec(_summary(), train, MODEL, {"monitor": "val_list_ndcg@20"})
    assert spec.model.dense_features[2:4] == ("income", "income_missing")  # the schema's
    broken = {"cardinalities": {"user_idx": 3}}  # an older run's summary
    with pytest.raises(ValueError, match="re-run the features stage"):
        ranker_spec(broken, train, MODEL, TRAINING)
    with pytest.raises(ValueError, match="recommend.model"):
        ranker_spec(_summary(), train, {**MODEL, "architecture": "xgboost"}, TRAINING)
    with pytest.raises(ValueError, match="train split is empty"):
        ranker_spec(_summary(), train.iloc[:0], scaled, TRAINING)


def _with_features(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out["retrieval_log_rank"] = np.log1p(out["retrieval_rank"]).astype(np.float32)
    for c in DENSE_FEATURES:
        if c not in out:
            out[c] = rng.normal(size=len(out)).astype(np.float32)
    for c in SPARSE_FEATURES:
        if c not in out:
            out[c] = rng.integers(0, 4, len(out))
    out["genres"] = [rng.integers(0, 4, rng.integers(1, 3)) for _ in range(len(out))]
    return out


def test_rerank_scores_the_serve_lists_and_reports_every_key(data, lists):
    users, items, train, validation, test = data
    candidates, report = lists
    fit = _with_features(candidates[candidates["list"] == "fit"], 5)
    holdout = _with_features(candidates[candidates["list"] == "holdout"], 7)
    serve = _with_features(candidates[candidates["list"] == "serve"], 6)
    config = spec_from_dict(ranker_spec(_summary(), fit, MODEL, TRAINING)).model
    model = make_model_file(config, build_ranking_model(config).state_dict())
    user_index = pd.DataFrame(
        {"user_idx": range(N_USERS), "user_id": [f"u{u}" for u in range(N_USERS)]}
    )
    item_index = pd.DataFrame(
        {"item_idx": range(N_ITEMS), "item_id": [f"i{i}" for i in range(N_ITEMS)]}
    )
    summary = {"best_epoch": 1, "epochs": 1, "world_size": 2}
    params = {"ks": [5, 20], "top_k": 3, "seed": 0}
    other = make_model_file(config, build_ranking_model(config).state_dict())
    refit = refit_retrieval_metrics(_refit_model(), train, validation, test, params)
    top, metrics, mlflow_metrics, tags, figure = rerank_and_evaluate(
        model,
        other,
        fit,
        holdout,
        serve,
        train,
        validation,
        test,
        user_index,
        item_index,
        report,
        summary,
        refit,
        params,
    )
    for key in (
        "retrieval_recall@20", "retrieval_recall@5", "retrieval_ndcg@5", "rerank_recall@5",
        "rerank_ndcg@5", "ranker_test_auc", "logreg_rerank_ndcg@5", "popularity_ndcg@5",
        "ann_recall_vs_exact", "rated_pairs_rerank_ndcg@5", "val_rated_pairs_rerank_ndcg@5",
        "refit_retrieval_ndcg@5", "rerank_minus_refit_retrieval_ndcg@5_ci95",
    ):  # fmt: skip
        assert key in metrics, key
    assert metrics["refit_retrieval_ndcg@20"] == refit["ndcg@20"]
    low, high = metrics["rerank_minus_refit_retrieval_ndcg@5_ci95"]
    assert low <= metrics["rerank_ndcg@5"] - refit["ndcg@5"] <= high
    # Retrieval order over exact top-N lists is the two-tower's full-catalogue ranking.
    seen = pd.concat([train, validation])
    positives = test[test["label"] == 1]
    u_emb = np.stack(users["embedding"].to_numpy())
    i_emb = np.stack(items["embedding"].to_numpy())
    full = full_catalogue_topk_metrics(
        embedding_score_fn(u_emb, i_emb), N_ITEMS, positives["user_idx"], positives["item_idx"],
        seen["user_idx"], seen["item_idx"], ks=[5, 20],
    )  # fmt: skip
    assert metrics["retrieval_ndcg@5"] == pytest.approx(full["ndcg@5"], abs=1e-6)
    assert metrics["retrieval_recall@20"] == pytest.approx(full["recall@20"], abs=1e-6)
    assert "test_rerank_ndcg_at_5" in mlflow_metrics and tags["n_candidates"] == 20
    # The holdout lists (validation positives of users the ranker did not train on).
    assert metrics["val_retrieval_recall@20"] > 0 and "val_rerank_ndcg_at_5" in mlflow_metrics
    assert "test_val_rerank_ndcg_at_5" not in mlflow_metrics
    assert len(figure.axes) == 2
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert "two-tower refit on train + validation" in labels
    assert list(top.columns) == ["user_id", "item_id", "rank", "retrieval_score", "ranker_score"]
    assert top.groupby("user_id").size().eq(3).all() and top["user_id"].nunique() == N_USERS
    # An implicit log whose every pair is a positive: the one-class ablation is left out.
    args = (model, other, fit, holdout, serve, train.assign(label=1), validation, test)
    rest = (user_index, item_index, report, summary, refit, params)
    _, implicit, _, _, figure = rerank_and_evaluate(*args, *rest)
    assert not [k for k in implicit if "rated_pairs" in k] and "rerank_ndcg@5" in implicit
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert "ranker trained on rated pairs" not in labels


def _refit_model() -> dict:
    torch.manual_seed(0)  # the same weights at every call
    config = tt.TwoTowerConfig(
        num_users=N_USERS, num_items=N_ITEMS, embedding_dim=8, layer_sizes=(8,)
    )
    return tt.make_model_file(config, tt.build_two_tower(config).state_dict())


def test_the_refit_is_the_two_tower_for_its_kept_epochs_on_both_periods():
    spec = {"kind": "two_tower", "spec": {"name": "two_tower", "monitor": "val_ndcg@10"}}
    params = {"epochs": 30, "patience": 3, "embedding_lr": 0.02}
    refit_spec, refit_params = refit_settings(spec, params, {"best_epoch": 11, "epochs": 14})
    assert refit_spec["spec"] == {  # the last epoch; nothing held out to rank
        "name": "recommend.refit", "monitor": None, "validate_retrieval": False,
    }  # fmt: skip
    assert refit_params == {"epochs": 11, "patience": None, "embedding_lr": 0.02}
    assert spec["spec"]["monitor"] == "val_ndcg@10" and params["epochs"] == 30  # not changed


def test_refit_rows_are_train_and_validation(spark, data):
    _, _, train, validation, _ = data
    rows = refit_rows(spark.createDataFrame(train), spark.createDataFrame(validation))
    assert rows.count() == len(train) + len(validation)


def test_the_refit_is_scored_on_the_funnels_test_pairs(data):
    _, _, train, validation, test = data
    refit = refit_retrieval_metrics(_refit_model(), train, validation, test, {"ks": [5, 20]})
    # the funnel's relevant pairs: test positives neither in train nor in validation
    seen = set(
        zip(
            pd.concat([train, validation])["user_idx"],
            pd.concat([train, validation])["item_idx"],
            strict=True,
        )
    )
    positives = test[test["label"] == 1]
    unseen = [
        u
        for u, i in zip(positives["user_idx"], positives["item_idx"], strict=True)
        if (u, i) not in seen
    ]
    json.dumps(refit)  # persisted as JSON (a Databricks task boundary)
    assert refit["per_user"]["users"] == sorted(set(unseen))
    model = tt.model_from_file(_refit_model())
    users = model.encode_users(torch.arange(N_USERS))
    items = model.encode_items(torch.arange(N_ITEMS))
    both = pd.concat([train, validation])
    direct = full_catalogue_topk_metrics(
        embedding_score_fn(users, items), N_ITEMS, positives["user_idx"], positives["item_idx"],
        both["user_idx"], both["item_idx"], ks=[5, 20],
    )  # fmt: skip
    assert refit["ndcg@20"] == pytest.approx(direct["ndcg@20"])


def test_top_k_table_orders_by_ranker_score_and_translates_ids():
    scored = pd.DataFrame(
        {
            "user_idx": [0, 0, 0, 1],
            "item_idx": [2, 1, 0, 2],
            "retrieval_score": [0.9, 0.8, 0.7, 0.5],
            "ranker_score": [0.1, 0.7, 0.7, 0.3],
        }
    )
    users = pd.DataFrame({"user_idx": [0, 1], "user_id": ["a", "b"]})
    items = pd.DataFrame({"item_idx": [0, 1, 2], "item_id": ["x", "y", "z"]})
    top = top_k_table(scored, users, items, 2)
    # user a: items 0 and 1 tie at 0.7 -> the lower index first
    assert top.values.tolist() == [
        ["a", "x", 1, pytest.approx(0.7), pytest.approx(0.7)],
        ["a", "y", 2, pytest.approx(0.8), pytest.approx(0.7)],
        ["b", "z", 1, pytest.approx(0.5), pytest.approx(0.3)],
    ]
    with pytest.raises(ValueError, match="no original id"):
        top_k_table(scored, users.iloc[:1], items, 2)


def test_the_pipeline_reads_two_tower_outputs_and_reuses_the_shared_stages():
    pipeline = create_pipeline()
    names = {n.name for n in pipeline.nodes}
    assert "two_tower.training.train_model" in names  # the retrieval model is trained
    assert "recommend.training.train_model" in names  # the same training node, the ranker
    assert "two_tower.evaluation.fit_als_baseline" not in names
    assert "recommend.rated_pairs.training.train_model" in names  # the ablation's ranker
    assert "recommend.rated_pairs.export.export_test" not in names
    refit = next(n for n in pipeline.nodes if n.name == "recommend.refit.refit_two_tower")
    assert refit.inputs[:2] == ["recommend.refit.train_mds", "two_tower.validation_mds"]
    assert "two_tower.training_summary" in refit.inputs  # its epochs: the two-tower's kept ones
    assert {"recommend.refit.export.export_train"} == {
        n for n in names if n.startswith("recommend.refit.export")
    }
    assert {"raw_interactions", "raw_users", "raw_items"} <= pipeline.inputs()


def test_rated_pairs_carry_the_retrieval_features_of_a_candidate(data):
    users, items, train, validation, _ = data
    rows = rated_pair_rows(users, items, train, validation)
    assert len(rows) == len(train) + len(validation)
    assert (rows["list"] == "fit").sum() == len(train)
    fit = rows[rows["list"] == "fit"]
    np.testing.assert_array_equal(fit["label"], train["label"])
    u_emb = np.stack(users["embedding"].to_numpy())
    i_emb = np.stack(items["embedding"].to_numpy())
    first = fit.iloc[0]
    full = i_emb @ u_emb[int(first["user_idx"])]
    assert first["retrieval_score"] == pytest.approx(full[int(first["item_idx"])], rel=1e-5)
    assert first["retrieval_rank"] == 1 + int((full > full[int(first["item_idx"])]).sum())


def test_package_recommender_serves_from_the_run_tables(data, lists):
    users, items, train, validation, _ = data
    rng = np.random.default_rng(9)
    users = users.assign(user_id=[f"u{u}" for u in range(N_USERS)])
    items = items.assign(item_id=[f"i{i}" for i in range(N_ITEMS)])
    index = build_retrieval_index(items, INDEX)
    config = spec_from_dict(
        ranker_spec(_summary(), lists[0][lists[0]["list"] == "fit"], MODEL, TRAINING)
    ).model
    model = make_model_file(config, build_ranking_model(config).state_dict())
    user_profiles = pd.DataFrame({"user_idx": range(N_USERS)})
    for c in ("age_bucket", "gender", "occupation", "zip_prefix"):
        user_profiles[c] = rng.integers(0, 5, N_USERS)
    user_profiles["income"] = rng.normal(size=N_USERS).astype(np.float32)
    user_profiles["income_missing"] = (rng.random(N_USERS) < 0.2).astype(np.float32)
    user_stats = pd.DataFrame(
        {
            "user_idx": range(N_USERS),
            "user_log_activity": rng.random(N_USERS),
            "user_mean_rating": rng.random(N_USERS),
            "user_genres_share": [rng.dirichlet(np.ones(4)) for _ in range(N_USERS)],
        }
    )
    item_profiles = pd.DataFrame(
        {
            "item_idx": range(N_ITEMS),
            "year_bucket": rng.integers(0, 5, N_ITEMS),
            "genres": [rng.choice(4, 2, replace=False) for _ in range(N_ITEMS)],
        }
    )
    item_stats = pd.DataFrame(
        {
            "item_idx": range(N_ITEMS),
            "item_log_popularity": rng.random(N_ITEMS),
            "item_mean_rating": rng.random(N_ITEMS),
        }
    )
    tables = (user_profiles, item_profiles, user_stats, item_stats, _summary())
    args = (users, items, index, model, *tables)
    local, logged = package_recommender(
        *args, train, validation, RETRIEVAL, {"top_k": 4, "ks": [5]}
    )
    assert local is logged
    top = local.predict(None, pd.DataFrame({"user_id": ["u3", "u3"]}))
    assert top["rank"].tolist() == [1, 2, 3, 4] and set(top["user_id"]) == {"u3"}
    seen = set(train.loc[train["user_idx"] == 3, "item_idx"]) | set(
        validation.loc[validation["user_idx"] == 3, "item_idx"]
    )
    assert not {f"i{i}" for i in seen} & set(top["item_id"])
    with pytest.raises(ValueError, match="do not cover the item index"):
        package_recommender(
            *args[:5], item_profiles.iloc[:-1], user_stats, item_stats.iloc[:-1], _summary(),
            train, validation, RETRIEVAL, {"top_k": 4},
        )  # fmt: skip
