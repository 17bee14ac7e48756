"""Unit tests of the ranking model (single process, unsharded)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from recsys_kedro.models.model_file import ModelFileError, save_model_file
from recsys_kedro.models.ranking import (
    ARCHITECTURES,
    CHECKPOINT_FORMAT,
    RankingConfig,
    RankingModel,
    RankingTrainTask,
    build_ranking_model,
    load_ranking_model,
    make_embedding_bag_collection,
    make_model_file,
    model_from_file,
    predict_proba,
)
from recsys_kedro.models.two_tower import TwoTowerConfig, build_two_tower
from recsys_kedro.models.two_tower import make_model_file as two_tower_checkpoint

BASE = dict(
    dense_features=("d0", "d1", "d2"),
    sparse_features=("user", "item", "tags"),
    cardinalities=(7, 11, 5),
    jagged_features=("tags",),
    embedding_dim=4,
    dense_arch_layer_sizes=(8, 4),
    over_arch_layer_sizes=(8, 1),
    dcn_num_layers=2,
    dcn_low_rank_dim=3,
    deepfm_hidden_layer_size=8,
    deepfm_dimension=5,
)


def make_config(**overrides) -> RankingConfig:
    return RankingConfig(**{**BASE, **overrides})


def make_columns(seed: int = 0, n: int = 6, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """``n`` rows; the jagged ``tags`` bags hold 0 to 3 ids (row 1's is empty)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([2, 0, 1, 3, 1, 2][:n], dtype=torch.int32)
    return {
        "d0": torch.randn(n, generator=g) * scale,
        "d1": torch.randn(n, generator=g) * scale,
        "d2": torch.randn(n, generator=g) * scale,
        "user": torch.randint(0, 7, (n,), generator=g),
        "item": torch.randint(0, 11, (n,), generator=g),
        "tags__values": torch.randint(0, 5, (int(lengths.sum()),), generator=g),
        "tags__lengths": lengths,
        "label": torch.tensor([1, 0, 1, 1, 0, 0][:n], dtype=torch.float32),
    }


@pytest.fixture(params=ARCHITECTURES)
def config(request) -> RankingConfig:
    return make_config(architecture=request.param)


def build(config: RankingConfig, seed: int = 0) -> RankingModel:
    torch.manual_seed(seed)
    return build_ranking_model(config, device="cpu")


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(architecture="wide_deep"), "architecture must be one of"),
        (dict(pooling="max"), "pooling must be one of"),
        (dict(dense_features=()), "dense_features is empty"),
        (dict(dense_features="d0"), "dense_features must be a list"),
        (dict(sparse_features=(), cardinalities=(), jagged_features=()), "sparse_features is"),
        (dict(cardinalities=(7, 11)), "cardinalities has 2 entries for 3 sparse_features"),
        (dict(cardinalities=(7, 0, 5)), r"cardinalities must be >= 1.*item=0"),
        (dict(jagged_features=("genres",)), "jagged_features .*genres.* not among"),
        (dict(dense_features=("d0", "user")), "in both dense_features and sparse_features"),
        (dict(dense_features=("d0", "d0")), "dense_features lists a column twice"),
        (dict(dense_features=("label",)), "'label' is the label column"),
        (dict(embedding_dim=0), "embedding_dim must be an integer >= 1"),
        (dict(dcn_low_rank_dim=-1), "dcn_low_rank_dim must be an integer >= 1"),
        (dict(dense_arch_layer_sizes=()), "dense_arch_layer_sizes must be a non-empty"),
        (dict(dense_arch_layer_sizes=(8, 6)), "last dense arch size must equal embedding_dim"),
        (dict(over_arch_layer_sizes=(8, 2)), r"end with 1 \(the logit\)"),
        (dict(over_arch_layer_sizes=(1,)), "at least two layers"),
        (dict(dense_mean=(0.0, 0.0, 0.0)), "go together"),
        (dict(dense_mean=(0.0,), dense_std=(1.0,)), "one value per dense feature"),
        (dict(dense_mean=(0.0, 0.0, 0.0), dense_std=(1.0, 0.0, 1.0)), "dense_std > 0"),
    ],
)
def test_config_errors_name_the_field_and_the_fix(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_config(**overrides)


def test_config_normalises_lists_and_checks_dlrm_sizes_only_where_used():
    config = make_config(
        dense_features=["d0"], cardinalities=[7, 11, 5], over_arch_layer_sizes=[16, 1]
    )
    assert config.dense_features == ("d0",) and config.cardinalities == (7, 11, 5)
    assert config.over_arch_layer_sizes == (16, 1)
    assert config == make_config(dense_features=("d0",), over_arch_layer_sizes=(16, 1))
    hash(config)
    # DeepFM has no dense arch of its own sizes: the DLRM constraint does not apply.
    make_config(architecture="deepfm", dense_arch_layer_sizes=(8, 6))
    layout = config.layout
    assert layout.dense == ("d0",) and layout.sparse == ("user", "item", "tags")
    assert layout.jagged == ("tags",) and layout.label == "label"


def test_one_table_per_sparse_feature_with_the_configured_pooling():
    ebc = make_embedding_bag_collection(make_config(pooling="sum"))
    tables = ebc.embedding_bag_configs()
    assert [t.name for t in tables] == ["t_user", "t_item", "t_tags"]
    assert [t.feature_names for t in tables] == [["user"], ["item"], ["tags"]]
    assert [t.num_embeddings for t in tables] == [7, 11, 5]
    assert {t.embedding_dim for t in tables} == {4}

    batch = make_config().layout.to_batch(make_columns())
    bag = batch.sparse_features["tags"]
    row0 = bag.values()[: int(bag.lengths()[0])]  # row 0 holds two tags
    for pooling, reduce in (("sum", torch.sum), ("mean", torch.mean)):
        ebc = make_embedding_bag_collection(make_config(pooling=pooling))
        pooled = ebc(batch.sparse_features)["tags"]
        weight = ebc.embedding_bags["t_tags"].weight
        torch.testing.assert_close(pooled[0], reduce(weight[row0], dim=0))
        torch.testing.assert_close(pooled[1], torch.zeros(4))  # the empty bag


# --------------------------------------------------------------------------- forward


def test_forward_shapes_finite_logits_and_gradients_everywhere(config):
    model = build(config)
    task = RankingTrainTask(model)
    batch = config.layout.to_batch(make_columns())
    logits = model(batch.dense_features, batch.sparse_features)
    assert logits.shape == (6,) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()

    loss, _ = task(batch)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"no gradient reaches {name}"
    tables = model.embedding_bag_collection.embedding_bags
    for name, ids in (("t_user", batch.sparse_features["user"].values()),
                      ("t_tags", batch.sparse_features["tags"].values())):  # fmt: skip
        grad = tables[name].weight.grad
        assert grad[ids].abs().sum() > 0, f"no gradient reaches the rows of {name}"
        unused = torch.ones(grad.shape[0], dtype=torch.bool)
        unused[ids] = False
        assert grad[unused].abs().sum() == 0
    dense = [p for n, p in model.named_parameters() if "embedding_bags" not in n]
    assert dense and sum(float(p.grad.abs().sum()) for p in dense) > 0


def test_embeddings_on_meta_dense_parameters_real(config):
    model = build_ranking_model(config, device="cpu", embedding_device="meta")
    for name, param in model.named_parameters():
        expected = "meta" if "embedding_bags" in name else "cpu"
        assert param.device.type == expected, name
        if expected == "cpu":
            assert torch.isfinite(param).all()


def test_deepfm_returns_logits_not_probabilities():
    config = make_config(architecture="deepfm")
    model = build(config)
    inner = model.model
    assert isinstance(inner.over_arch.model[-1], nn.Identity)
    batch = config.layout.to_batch(make_columns(scale=100.0))
    # TorchRec's DeepFM computation, without the sigmoid of its OverArch.
    dense = inner.dense_arch(batch.dense_features)
    sparse = inner.sparse_arch(batch.sparse_features)
    interactions = inner.inter_arch(dense_features=dense, sparse_features=sparse)
    expected = inner.over_arch.model[0](interactions).squeeze(-1)
    logits = model(batch.dense_features, batch.sparse_features)
    torch.testing.assert_close(logits, expected)
    assert ((logits < 0) | (logits > 1)).any(), logits  # a probability could not


def test_train_task_loss_is_bce_with_logits(config):
    model = build(config)
    task = RankingTrainTask(model)
    batch = config.layout.to_batch(make_columns())
    loss, (detached, logits, labels) = task(batch)
    assert loss.shape == () and loss.requires_grad
    assert not (detached.requires_grad or logits.requires_grad or labels.requires_grad)
    assert logits.shape == labels.shape == (6,)
    torch.testing.assert_close(labels, batch.labels)
    z = model(batch.dense_features, batch.sparse_features).detach().double()
    y = batch.labels.double()
    by_hand = -(y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(1 - torch.sigmoid(z)))
    assert float(detached) == pytest.approx(float(by_hand.mean()), rel=1e-5)
    assert float(loss.detach()) == float(detached)
    torch.testing.assert_close(logits, z.float())


def test_predict_proba_scores_in_eval_mode_without_grad(config):
    model = build(config).train()
    batch = config.layout.to_batch(make_columns())
    probabilities = predict_proba(model, batch)
    assert isinstance(probabilities, np.ndarray) and probabilities.shape == (6,)
    assert probabilities.dtype == np.float32
    assert model.training  # the caller's mode is restored
    with torch.no_grad():
        logits = model(batch.dense_features, batch.sparse_features)
    np.testing.assert_allclose(probabilities, torch.sigmoid(logits).numpy(), rtol=1e-6)
    pair = predict_proba(model, (batch.dense_features, batch.sparse_features))
    np.testing.assert_array_equal(pair, probabilities)


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_gives_identical_predictions(config, tmp_path):
    model = build(config, seed=3)
    with torch.no_grad():  # move every weight away from its initial value
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    checkpoint = make_model_file(config, model.state_dict())
    assert checkpoint["format"] == CHECKPOINT_FORMAT
    assert checkpoint["config"] == dataclasses.asdict(config)
    path = str(tmp_path / "models" / "ranking.pt")
    save_model_file(checkpoint, path)

    loaded = load_ranking_model(path)
    assert isinstance(loaded, RankingModel) and not loaded.training
    assert loaded.config == config
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    batch = config.layout.to_batch(make_columns(seed=5))
    np.testing.assert_array_equal(predict_proba(loaded, batch), predict_proba(model, batch))


def test_foreign_or_incomplete_checkpoints_are_refused(tmp_path):
    two_tower = TwoTowerConfig(num_users=3, num_items=4, embedding_dim=4, layer_sizes=(4,))
    path = str(tmp_path / "two_tower.pt")
    save_model_file(two_tower_checkpoint(two_tower, build_two_tower(two_tower).state_dict()), path)
    with pytest.raises(ModelFileError, match="expected a 'recsys_kedro.ranking/v1' model file"):
        load_ranking_model(path)

    config = make_config()
    state = build(config).state_dict()
    state.pop("model.over_arch.model.1.bias")
    with pytest.raises(RuntimeError, match="Missing key"):
        model_from_file(make_model_file(config, state))


def test_a_standardising_model_scores_raw_features_as_the_plain_model_scores_standard_ones(
    config, tmp_path
):
    mean, std = (1.0, -2.0, 0.5), (2.0, 0.5, 4.0)
    scaled_config = dataclasses.replace(config, dense_mean=mean, dense_std=std)
    plain, scaled = build(config), build(scaled_config)
    scaled.load_state_dict(plain.state_dict())  # the statistics are config, not weights
    columns = make_columns(scale=3.0)
    standard = dict(columns)
    for j, name in enumerate(config.dense_features):
        standard[name] = (columns[name] - mean[j]) / std[j]
    want = predict_proba(plain, config.layout.to_batch(standard))
    got = predict_proba(scaled, config.layout.to_batch(columns))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert not np.allclose(got, predict_proba(plain, config.layout.to_batch(columns)))
    path = tmp_path / "scaled.pt"
    torch.save(make_model_file(scaled_config, scaled.state_dict()), path)
    restored = load_ranking_model(str(path))
    assert restored.config.dense_mean == mean
    np.testing.assert_allclose(
        predict_proba(restored, config.layout.to_batch(columns)), got, rtol=1e-6
    )
