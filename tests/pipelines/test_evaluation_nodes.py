from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_kedro.models.two_tower import TwoTowerConfig, build_two_tower, make_checkpoint
from recsys_kedro.pipelines.evaluation.nodes import embed_users_and_items, evaluate_retrieval

PARAMS = {"ks": [1, 2, 5], "exclude_validation_items": True, "batch_size": 2}


def test_embed_users_and_items_follows_the_index_and_the_model():
    config = TwoTowerConfig(num_users=3, num_items=4, embedding_dim=4, layer_sizes=(8, 2))
    torch.manual_seed(0)
    model = build_two_tower(config)
    users = pd.DataFrame({"user_id": ["c", "a", "b"], "user_idx": [2, 0, 1]})
    items = pd.DataFrame({"item_id": list("wxyz"), "item_idx": [0, 1, 2, 3]})
    u, i = embed_users_and_items(make_checkpoint(config, model.state_dict()), users, items)
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


def test_a_perfect_model_beats_popularity():
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
    metrics, mlflow_metrics, figure = evaluate_retrieval(
        users, items, train, validation, test, popularity, stats, summary, PARAMS
    )
    assert metrics["recall@1"] == 1.0 and metrics["ndcg@1"] == 1.0
    # Popularity: items 2 and 3 tie at 0 after masking seen items; the lower index (2) wins,
    # a hit for user 1 only.
    assert metrics["popularity_recall@1"] == 0.5
    assert metrics["test_auc"] == 1.0
    assert metrics["n_train"] == 3 and metrics["n_test"] == 3 and metrics["epochs"] == 1
    assert mlflow_metrics["test_recall_at_1"] == {"step": 0, "value": 1.0}
    assert all("@" not in k for k in mlflow_metrics)
    assert len(figure.axes) == 2


def test_non_contiguous_embeddings_are_rejected():
    users = pd.DataFrame({"user_idx": [0, 2], "embedding": [np.zeros(2), np.zeros(2)]})
    with pytest.raises(ValueError, match="not contiguous"):
        evaluate_retrieval(
            users, users.rename(columns={"user_idx": "item_idx"}), *[None] * 6, PARAMS
        )
