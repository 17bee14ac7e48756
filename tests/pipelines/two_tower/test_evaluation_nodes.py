from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog

from recsys_kedro.models.als import als_search_space
from recsys_kedro.models.two_tower import TwoTowerConfig, build_two_tower, make_model_file
from recsys_kedro.pipelines.two_tower.evaluation.nodes import (
    embed_users_and_items,
    evaluate_retrieval,
    fit_als_baseline,
)
from recsys_kedro.pipelines.two_tower.evaluation.pipeline import create_pipeline
from recsys_kedro.pipelines.two_tower.pipeline import create_pipeline as two_tower
from recsys_kedro.settings import CONFIG_LOADER_ARGS

ROOT = Path(__file__).resolve().parents[3]

PARAMS = {"ks": [1, 2, 5], "exclude_validation_items": True, "batch_size": 2}
ALS_OFF = {"enabled": False}


def test_embed_users_and_items_follows_the_index_and_the_model(spark):
    config = TwoTowerConfig(num_users=3, num_items=4, embedding_dim=4, layer_sizes=(8, 2))
    torch.manual_seed(0)
    model = build_two_tower(config)
    users = pd.DataFrame({"user_id": ["c", "a", "b"], "user_idx": [2, 0, 1]})
    items = pd.DataFrame({"item_id": list("wxyz"), "item_idx": [0, 1, 2, 3]})
    u, i = embed_users_and_items(
        make_model_file(config, model.state_dict()),
        spark.createDataFrame(users).repartition(2),
        items,
    )
    u = u.toPandas().sort_values("user_idx")  # encoded on the executors
    assert u["user_idx"].tolist() == [0, 1, 2] and u["user_id"].tolist() == ["a", "b", "c"]
    expected = model.eval().encode_users(torch.tensor([0, 1, 2])).numpy()
    np.testing.assert_allclose(np.stack(u["embedding"]), expected, rtol=1e-6)
    assert len(i) == 4 and np.stack(i["embedding"]).shape == (4, 2)


def _frame(idx_col, vectors):
    return pd.DataFrame(
        {idx_col: range(len(vectors)), "embedding": list(np.asarray(vectors, np.float32))}
    )


def _pairs(rows):
    return pd.DataFrame(rows, columns=["user_idx", "item_idx", "label"])


def _users(spark, frame):
    """User embeddings as the node gets them: a Spark frame of ``user_idx, embedding``."""
    pairs = zip(frame["user_idx"], frame["embedding"], strict=True)
    rows = [(int(u), [float(x) for x in v]) for u, v in pairs]
    return spark.createDataFrame(rows, "user_idx long, embedding array<float>")


def _spark(spark, *frames):
    """The splits (and the user embeddings) as the node gets them: Spark frames."""
    return [spark.createDataFrame(f) for f in frames]


def test_a_perfect_model_beats_popularity(spark):
    # 2 users, 4 items; user 0 likes item 3, user 1 likes item 2; items 0/1 are popular.
    users = _frame("user_idx", [[1, 0], [0, 1]])
    items = _frame("item_idx", [[0.1, 0.1], [0.2, 0.2], [-1, 1], [1, -1]])
    train = _pairs([(0, 0, 1), (1, 1, 1), (1, 0, 1)])
    validation = _pairs([(0, 1, 1)])
    test = _pairs([(0, 3, 1), (1, 2, 1), (0, 2, 0)])
    popularity = pd.DataFrame({"item_idx": [0, 1, 2, 3], "n_positive": [2, 1, 0, 0]})
    stats = {
        "n_users": 2,
        "n_items": 4,
        "train": {"interactions": 3},
        "validation": {"interactions": 1},
        "test": {"interactions": 3},
    }
    summary = {"train_samples_per_s": 123.0, "epochs": 1, "world_size": 2}
    metrics, mlflow_metrics, tags, figure = evaluate_retrieval(
        _users(spark, users), items, *_spark(spark, train, validation, test), popularity, stats,
        summary,
        ALS_OFF, PARAMS,
    )  # fmt: skip
    assert metrics["recall@1"] == 1.0 and metrics["ndcg@1"] == 1.0
    # Popularity: items 2 and 3 tie at 0 after masking seen items; the lower index (2) wins,
    # a hit for user 1 only.
    assert metrics["popularity_recall@1"] == 0.5
    assert metrics["test_auc"] == 1.0
    assert metrics["n_train"] == 3 and metrics["n_test"] == 3 and metrics["epochs"] == 1
    assert mlflow_metrics["test_recall_at_1"] == {"step": 0, "value": 1.0}
    assert all("@" not in k for k in mlflow_metrics)
    # counts and settings are MLflow tags, not one-point metric charts
    assert tags["n_train"] == 3 and tags["epochs"] == 1 and tags["world_size"] == 2
    assert not {"test_n_train", "test_epochs", "test_world_size"} & set(mlflow_metrics)
    assert len(figure.axes) == 2
    assert not any(k.startswith("als_") for k in metrics)  # ALS disabled: no ALS keys
    # A paired interval of the model minus popularity per metric, over the 2 test users.
    low, high = metrics["minus_popularity_recall@1_ci95"]
    assert low <= metrics["recall@1"] - metrics["popularity_recall@1"] <= high
    assert mlflow_metrics["test_minus_popularity_recall_at_1_ci95_low"]["value"] == low
    assert not [k for k, v in tags.items() if isinstance(v, list)]  # tags stay plain values
    assert not any(k.startswith("minus_als_") for k in metrics)
    assert [len(ax.get_lines()) for ax in figure.axes] == [2, 2]


def test_implicit_data_has_ranking_metrics_and_no_auc(spark):
    """Every interaction of an implicit log is a positive: AUC is undefined, and left out."""
    users = _frame("user_idx", [[1, 0], [0, 1]])
    items = _frame("item_idx", [[0.1, 0.1], [0.2, 0.2], [-1, 1], [1, -1]])
    test = _pairs([(0, 3, 1), (1, 2, 1)])
    popularity = pd.DataFrame({"item_idx": [0, 1, 2, 3], "n_positive": [2, 1, 0, 0]})
    stats = {
        "n_users": 2,
        "n_items": 4,
        **{s: {"interactions": 2} for s in ("train", "validation", "test")},
    }
    summary = {"train_samples_per_s": 1.0, "epochs": 1, "world_size": 2}
    metrics, mlflow_metrics, _, _ = evaluate_retrieval(
        _users(spark, users), items,
        *_spark(spark, _pairs([(0, 0, 1), (1, 1, 1)]), _pairs([(0, 1, 1)]), test),
        popularity, stats, summary, ALS_OFF, PARAMS,
    )  # fmt: skip
    assert "test_auc" not in metrics and "test_test_auc" not in mlflow_metrics
    assert metrics["recall@1"] == 1.0


def test_non_contiguous_embeddings_are_rejected():
    users = pd.DataFrame({"user_idx": [0, 2], "embedding": [np.zeros(2), np.zeros(2)]})
    with pytest.raises(ValueError, match="not contiguous"):
        evaluate_retrieval(
            users, users.rename(columns={"user_idx": "item_idx"}), *[None] * 7, PARAMS
        )


# --------------------------------------------------------------------------------------
# the ALS baseline
# --------------------------------------------------------------------------------------

ALS_PARAMS = {
    **PARAMS,
    "ks": [1, 2, 4],
    "als": {
        "enabled": True,
        "signal": "positives",
        "max_iter": 5,
        "seed": 0,
        "select_by": "ndcg@2",
        "num_blocks": 2,
        "search": {
            "n_trials": 2,
            "seed": 0,
            "space": [
                {"name": "rank", "type": "int", "low": 1, "high": 4},
                {"name": "reg_param", "type": "categorical", "choices": [0.1]},
                {"name": "alpha", "type": "categorical", "choices": [10.0]},
            ],
        },
    },
}


def _planted_splits() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Users 0-5 like items 0-5, users 6-15 like items 6-11 (more of them: popular items
    are group-B items). Per user: 3 train positives, 1 validation and 1 test positive of its
    block, and one disliked train item of the other block."""
    rng = np.random.default_rng(1)
    splits: dict[str, list] = {"train": [], "validation": [], "test": []}
    for users, block, other in (
        (range(6), range(6), range(6, 12)),
        (range(6, 16), range(6, 12), range(6)),
    ):
        for u in users:
            liked = rng.permutation(list(block))
            splits["train"] += [(u, int(i), 1, 5.0) for i in liked[:3]]
            splits["train"].append((u, int(rng.choice(list(other))), 0, 1.0))
            splits["validation"].append((u, int(liked[3]), 1, 4.0))
            splits["test"].append((u, int(liked[4]), 1, 5.0))
    cols = ["user_idx", "item_idx", "label", "rating"]
    train, validation, test = (pd.DataFrame(splits[s], columns=cols) for s in splits)
    stats: dict = {"n_users": 16, "n_items": 12}
    for name, df in zip(splits, (train, validation, test), strict=True):
        stats[name] = {"interactions": len(df)}
    return train, validation, test, stats


def _popularity(train: pd.DataFrame, n_items: int) -> pd.DataFrame:
    counts = np.bincount(train.loc[train["label"] == 1, "item_idx"], minlength=n_items)
    return pd.DataFrame({"item_idx": range(n_items), "n_positive": counts})


def test_als_disabled_trains_nothing():
    params = {**ALS_PARAMS, "als": {**ALS_PARAMS["als"], "enabled": False}}
    # train=None: touching the Spark split (or fitting anything) would fail
    assert fit_als_baseline(None, None, None, {}, params) == {"enabled": False}
    assert fit_als_baseline(None, None, None, {}, PARAMS) == {"enabled": False}  # no section


def test_als_settings_errors_name_the_parameters_file():
    no_alpha = ALS_PARAMS["als"]["search"]["space"][:2]
    bad_space = {
        **ALS_PARAMS,
        "als": {**ALS_PARAMS["als"], "search": {"n_trials": 2, "space": no_alpha}},
    }
    with pytest.raises(
        ValueError,
        match=r"missing \['alpha'\].*two_tower\.evaluation\.als in conf/base/parameters_two_tower",
    ):
        fit_als_baseline(None, None, None, {}, bad_space)
    old_grid = {**ALS_PARAMS, "als": {**ALS_PARAMS["als"], "search": {"grid": {"rank": [8]}}}}
    with pytest.raises(ValueError, match=r"als.search takes.*unknown: \['grid'\]"):
        fit_als_baseline(None, None, None, {}, old_grid)
    typo = {**ALS_PARAMS, "als": {**ALS_PARAMS["als"], "max_iters": 3}}
    with pytest.raises(ValueError, match=r"unknown ALS setting.*max_iters.*parameters_two_tower"):
        fit_als_baseline(None, None, None, {}, typo)


@pytest.fixture(scope="module")
def als_run(spark):
    train, validation, test, stats = _planted_splits()
    splits = _spark(spark, train, validation, test)
    als = fit_als_baseline(*splits, stats, ALS_PARAMS)
    return als, (train, validation, test, stats)


def test_als_baseline_is_tuned_on_validation_and_scored_on_test(als_run):
    als, _ = als_run
    json.dumps(als)  # persisted as JSON
    assert als["enabled"] is True and als["signal"] == "positives" and als["select_by"] == "ndcg@2"
    assert len(als["validation"]) == 2 and {r["alpha"] for r in als["validation"]} == {10.0}
    best = max(als["validation"], key=lambda row: row["ndcg@2"])
    assert als["params"] == {"rank": best["rank"], "reg_param": 0.1, "alpha": 10.0, "max_iter": 5}
    assert als["search"]["n_trials"] == 2 and set(als["search"]["space"]) == {
        "rank", "reg_param", "alpha",
    }  # fmt: skip
    assert isinstance(als["on_boundary"], list)
    for k in ALS_PARAMS["ks"]:
        assert 0.0 <= als["test"][f"recall@{k}"] <= 1.0 and f"ndcg@{k}" in als["test"]
    assert als["test"]["n_eval_users"] == 16 and als["search_s"] > 0


def test_evaluate_retrieval_reports_the_als_baseline(als_run, spark):
    als, (train, validation, test, stats) = als_run
    rng = np.random.default_rng(0)
    users = _frame("user_idx", rng.normal(size=(16, 3)))
    items = _frame("item_idx", rng.normal(size=(12, 3)))
    negative = _pairs([(0, 11, 0)]).assign(rating=1.0)  # AUC needs both classes
    test = pd.concat([test, negative], ignore_index=True)
    summary = {"train_samples_per_s": 1.0, "epochs": 1, "world_size": 1}
    popularity = _popularity(train, 12)
    splits = _spark(spark, train, validation, test)
    inputs = (_users(spark, users), items, *splits, popularity, stats, summary)
    metrics, mlflow_metrics, tags, figure = evaluate_retrieval(*inputs, als, ALS_PARAMS)
    for k in ALS_PARAMS["ks"]:
        for name in ("recall", "ndcg"):
            assert metrics[f"als_{name}@{k}"] == als["test"][f"{name}@{k}"]
            assert mlflow_metrics[f"test_als_{name}_at_{k}"]["value"] == als["test"][f"{name}@{k}"]
    assert metrics["als_rank"] == als["params"]["rank"] and metrics["als_alpha"] == 10.0
    assert metrics["als_reg_param"] == 0.1 and tags["als_rank"] == als["params"]["rank"]
    assert metrics["als_max_iter"] == 5 and "als_max_iter" in tags
    assert "test_als_rank" not in mlflow_metrics  # the chosen point is a setting: a tag
    # the planted blocks: ALS learns them, popularity recommends the big group's items
    assert metrics["als_ndcg@2"] > metrics["popularity_ndcg@2"]
    # the random two-tower against ALS, paired over the same test users
    per_user = als["test_per_user"]
    assert len(per_user["users"]) == len(per_user["ndcg@2"]) == metrics["n_eval_users"]
    low, high = metrics["minus_als_ndcg@2_ci95"]
    assert low <= metrics["ndcg@2"] - metrics["als_ndcg@2"] <= high
    for ax in figure.axes:
        assert [line.get_label() for line in ax.get_lines()] == [
            "two-tower",
            "most popular",
            "ALS (Spark MLlib)",
        ]


def test_a_stale_als_baseline_is_rejected(spark):
    users = _frame("user_idx", [[1, 0], [0, 1]])
    items = _frame("item_idx", [[1, 0], [0, 1]])
    train, validation = _pairs([(0, 0, 1)]), _pairs([(1, 0, 1)])
    test = _pairs([(0, 1, 1), (1, 1, 1), (1, 0, 0)])
    als = {
        "enabled": True,
        "params": {"rank": 2, "reg_param": 0.1, "alpha": 1.0},
        "test": {"recall@1": 1.0, "ndcg@1": 1.0, "n_eval_users": 5},
    }
    stats = {
        "n_users": 2,
        "n_items": 2,
        **{s: {"interactions": 1} for s in ("train", "validation", "test")},
    }
    summary = {"train_samples_per_s": 1.0, "epochs": 1, "world_size": 1}
    splits = _spark(spark, train, validation, test)
    inputs = (_users(spark, users), items, *splits, _popularity(train, 2), stats, summary)
    with pytest.raises(ValueError, match="re-run the fit_als_baseline node"):
        evaluate_retrieval(*inputs, als, {**PARAMS, "ks": [1]})


# --------------------------------------------------------------------------------------
# pipeline and configuration
# --------------------------------------------------------------------------------------


def test_the_evaluation_stage_has_an_als_node_feeding_the_report():
    nodes = {n.name: n for n in create_pipeline().nodes}
    als = nodes["evaluation.fit_als_baseline"]
    assert als.inputs[0] == "train_split@spark" and "params:evaluation" in als.inputs
    assert als.outputs == ["als_baseline"]
    assert "als_baseline" in nodes["evaluation.evaluate_retrieval"].inputs


def test_two_tower_persists_the_als_baseline_and_configures_it():
    node = next(n for n in two_tower().nodes if n.name == "two_tower.evaluation.fit_als_baseline")
    assert node.inputs[0] == "two_tower.train_split@spark"
    assert node.outputs == ["two_tower.als_baseline"]

    args = {k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), env="local", **args)
    dataset = DataCatalog.from_config(loader["catalog"]).get("two_tower.als_baseline")
    assert "data/08_reporting/two_tower_als_baseline.json" in str(dataset._describe())
    als = loader["parameters"]["two_tower"]["evaluation"]["als"]
    assert als["enabled"] is True and als["signal"] in ("positives", "ratings")
    space = als_search_space(als["search"]["space"])
    assert set(space.dimensions) == {"rank", "reg_param", "alpha", "max_iter"}
    assert als["search"]["n_trials"] == loader["parameters"]["two_tower"]["tune"]["n_trials"]
    # long ALS runs cut their lineage into a checkpoint folder under the data root
    assert loader["spark"]["spark.checkpoint.dir"].startswith("data/06_models/")
