"""The shared ``fit`` with a RankingSpec on 2 gloo processes (CPU), without Spark.

The data is a block-layout MDS folder written here with Mosaic's ``MDSWriter`` (the layout of
:mod:`recsys_kedro.mds.block_format`), with a planted, learnable signal: the label is
``Bernoulli(sigmoid(1.5 * d0 + user_bias[user] + mean(tag_bias[tags])))``; ``d1`` and ``item``
are noise.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from streaming import MDSWriter

from recsys_kedro.evaluation.retrieval import auc
from recsys_kedro.mds import MDSFolder
from recsys_kedro.mds.block_format import block_mds_columns
from recsys_kedro.models.ranking import (
    ARCHITECTURES,
    RankingConfig,
    RankingTrainTask,
    build_ranking_model,
    load_ranking_model,
    model_from_file,
    predict_proba,
)
from recsys_kedro.training.config import ModelSpec, TrainConfig
from recsys_kedro.training.ranking import RankingSpec
from recsys_kedro.training.specs import spec_from_dict, spec_to_dict

from .spawn import fit_on_rank as _fit
from .spawn import run_on_ranks

N_USERS, N_ITEMS, N_TAGS = 60, 40, 12
SCALARS = {"d0": "float32", "d1": "float32", "user": "int64", "item": "int64", "label": "float32"}
JAGGED = {"tags": "int64"}
BLOCK_ROWS = 256
EPOCHS = 3


def _rows(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` rows; the biases are the same for every split (seed 0), the rows differ."""
    biases = np.random.default_rng(0)
    user_bias = biases.normal(0.0, 1.5, N_USERS)
    tag_bias = biases.normal(0.0, 1.0, N_TAGS)
    rng = np.random.default_rng(seed)
    d0, d1 = rng.normal(size=n), rng.normal(size=n)
    user, item = rng.integers(0, N_USERS, n), rng.integers(0, N_ITEMS, n)
    lengths = rng.integers(0, 4, n).astype(np.int32)
    values = rng.integers(0, N_TAGS, int(lengths.sum()))
    tag_sum = np.bincount(np.repeat(np.arange(n), lengths), tag_bias[values], minlength=n)
    tag_mean = tag_sum / np.maximum(lengths, 1)  # an empty bag pools to 0 ("mean")
    logit = 1.5 * d0 + user_bias[user] + tag_mean
    label = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    return {
        "d0": d0.astype(np.float32),
        "d1": d1.astype(np.float32),
        "user": user.astype(np.int64),
        "item": item.astype(np.int64),
        "label": label.astype(np.float32),
        "tags__values": values.astype(np.int64),
        "tags__lengths": lengths,
        "bayes_logit": logit,
    }


def _write(path: Path, rows: dict[str, np.ndarray]) -> MDSFolder:
    """A block-layout folder of ``rows`` (blocks of BLOCK_ROWS rows; the last one shorter)."""
    n = len(rows["label"])
    offsets = np.concatenate([[0], np.cumsum(rows["tags__lengths"])])
    columns = block_mds_columns(SCALARS, JAGGED)
    with MDSWriter(out=str(path), columns=columns, compression=None, size_limit=1 << 16) as w:
        for block_id, start in enumerate(range(0, n, BLOCK_ROWS)):
            stop = min(start + BLOCK_ROWS, n)
            sample = {name: rows[name][start:stop] for name in SCALARS}
            sample["tags__values"] = rows["tags__values"][offsets[start] : offsets[stop]]
            sample["tags__lengths"] = rows["tags__lengths"][start:stop]
            sample["_block_id"] = np.int64(block_id)
            sample["_n_rows"] = np.int32(stop - start)
            w.write(sample)
    return MDSFolder(
        remote=None,
        local=str(path),
        num_samples=math.ceil(n / BLOCK_ROWS),
        columns=columns,
        layout="block",
        num_rows=n,
        jagged=tuple(JAGGED),
    )


def _to_columns(rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in rows.items() if k != "bayes_logit"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranking_mds")
    train, val, test = _rows(4000, seed=1), _rows(1000, seed=2), _rows(1000, seed=3)
    random_labels = dict(train, label=(np.random.default_rng(4).random(4000) < 0.5))
    random_labels["label"] = random_labels["label"].astype(np.float32)
    return {
        "train": _write(root / "train", train),
        "validation": _write(root / "validation", val),
        "random_train": _write(root / "random_train", random_labels),
        "test_rows": test,
        "validation_rows": val,
    }


def _spec(architecture: str = "dlrm") -> RankingSpec:
    model = RankingConfig(
        dense_features=("d0", "d1"),
        sparse_features=("user", "item", "tags"),
        cardinalities=(N_USERS, N_ITEMS, N_TAGS),
        jagged_features=("tags",),
        architecture=architecture,
        embedding_dim=8,
        dense_arch_layer_sizes=(16, 8),
        over_arch_layer_sizes=(32, 16, 1),
        dcn_num_layers=2,
        dcn_low_rank_dim=4,
        deepfm_hidden_layer_size=16,
        deepfm_dimension=8,
    )
    return RankingSpec(model=model, name=architecture)


def _config(data, tmp_path: Path, **overrides) -> TrainConfig:
    kwargs = dict(
        train=data["train"],
        validation=data["validation"],
        model_path=str(tmp_path / "ckpt" / "model.pt"),
        epochs=EPOCHS,
        batch_size=64,
        eval_batch_size=256,
        embedding_lr=0.1,
        dense_lr=5e-3,
        seed=7,
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def _run(spec: RankingSpec, config: TrainConfig, out: Path) -> list[dict]:
    return run_on_ranks(_fit, (spec, config), world_size=2, out_dir=out)


# --------------------------------------------------------------------------- the spec


def test_spec_is_a_model_spec_and_crosses_a_node_boundary_as_plain_values():
    spec = _spec("dlrm_dcn")
    assert isinstance(spec, ModelSpec)
    assert spec.layout == spec.model.layout
    data = json.loads(json.dumps(spec.to_dict()))  # plain JSON values only
    assert RankingSpec.from_dict(data) == spec
    wrapped = json.loads(json.dumps(spec_to_dict(spec)))
    assert wrapped["kind"] == "ranking" and spec_from_dict(wrapped) == spec


def test_spec_checks_its_monitor():
    model = _spec().model
    with pytest.raises(ValueError, match="monitor must be one of"):
        RankingSpec(model=model, monitor="val_ndcg")
    with pytest.raises(ValueError, match="monitor_mode must be 'max' or 'min'"):
        RankingSpec(model=model, monitor_mode="up")
    assert RankingSpec(model=model, monitor=None).monitor is None


def test_spec_builds_meta_tables_and_checkpoints_the_model_weights():
    spec = _spec("deepfm")
    task = spec.build_task(torch.device("cpu"))
    for name, param in task.named_parameters():
        assert param.device.type == ("meta" if "embedding_bags" in name else "cpu"), name
    # The checkpoint of a (gathered) train task state dict loads strictly as a RankingModel.
    torch.manual_seed(0)
    full = RankingTrainTask(build_ranking_model(spec.model, device="cpu"))
    checkpoint = spec.model_file(full.state_dict())
    assert all(not k.startswith("model.model.") for k in checkpoint["state_dict"])
    model = model_from_file(checkpoint)
    columns = _to_columns(_rows(50, seed=9))
    batch = spec.layout.to_batch(columns)
    _, (_, logits, _) = full.eval()(batch)
    np.testing.assert_allclose(predict_proba(model, batch), torch.sigmoid(logits).numpy())


# --------------------------------------------------------------------------- fit on 2 ranks


def _train(architecture: str, data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"run_{architecture}")
    spec = _spec(architecture)
    return spec, _run(spec, _config(data, tmp), tmp / "out")


@pytest.fixture(scope="module")
def trained_dlrm(data, tmp_path_factory):
    """DLRM with the plain loop: also the reference of the sparse-dist pipeline's test."""
    return _train("dlrm", data, tmp_path_factory)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def trained(request, data, tmp_path_factory):
    if request.param == "dlrm":
        return request.getfixturevalue("trained_dlrm")
    return _train(request.param, data, tmp_path_factory)


def test_bayes_auc_of_the_planted_signal(data):
    """The signal is learnable: the true logit ranks the test rows well."""
    rows = data["test_rows"]
    assert auc(rows["label"], rows["bayes_logit"]) > 0.8


def test_every_rank_returns_rank0_result(trained):
    _, (r0, r1) = trained
    assert r0 == r1
    assert r0["world_size"] == 2 and r0["epochs"] == EPOCHS and not r0["stopped_early"]
    assert r0["train_pipeline"] == "plain" and r0["device"] == "cpu"
    assert len(r0["history"]["val_auc"]) == EPOCHS
    assert r0["n_train_rows_seen"] % 128 == 0 and r0["n_train_rows_seen"] > 0


def test_tables_are_sharded_across_both_ranks(trained):
    _, (r0, _) = trained
    assert set(r0["sharding"]) == {"t_user", "t_item", "t_tags"}
    # Tables the planner splits or places (not replicated everywhere) land on both ranks.
    ranks = set()
    for placement in r0["sharding"].values():
        if not placement.startswith("data_parallel"):
            ranks |= set(json.loads(placement.split("on ranks ")[1]))
    assert ranks == {0, 1}, r0["sharding"]


def test_validation_auc_learns_the_signal_and_best_epoch_is_kept(trained):
    spec, (r0, _) = trained
    history = r0["history"]
    print(spec.name, r0["best_epoch"], r0["sharding"], json.dumps(history))  # shown with -rP
    assert max(history["val_auc"]) > 0.7, history
    assert history["train_loss"][-1] < history["train_loss"][0], history
    assert r0["best_epoch"] == int(np.argmax(history["val_auc"])) + 1


def test_checkpoint_scores_held_out_rows_like_validation(trained, data):
    spec, (r0, _) = trained
    model = load_ranking_model(r0["model_path"])
    assert model.config == spec.model and not model.training
    best_val_auc = r0["history"]["val_auc"][r0["best_epoch"] - 1]
    # The saved weights are the best epoch's: they reproduce its validation AUC ...
    val = data["validation_rows"]
    val_scores = predict_proba(model, spec.layout.to_batch(_to_columns(val)))
    assert auc(val["label"], val_scores) == pytest.approx(best_val_auc, abs=1e-4)
    # ... and generalise to rows no rank has seen.
    test = data["test_rows"]
    scores = predict_proba(model, spec.layout.to_batch(_to_columns(test)))
    assert scores.shape == (1000,) and ((scores > 0) & (scores < 1)).all()
    assert auc(test["label"], scores) == pytest.approx(best_val_auc, abs=0.06)


def test_early_stopping_when_validation_auc_cannot_improve(data, tmp_path):
    """Random labels and learning rates too small to change a float32 weight: the validation
    AUC of epoch 2 equals epoch 1's, so patience=1 stops there and keeps epoch 1."""
    config = _config(
        data,
        tmp_path,
        train=data["random_train"],
        epochs=4,
        patience=1,
        embedding_lr=1e-12,
        dense_lr=1e-12,
    )
    r0, r1 = _run(_spec("dlrm"), config, tmp_path / "out")
    assert r0 == r1
    assert r0["stopped_early"] and r0["epochs"] == 2 < config.epochs
    assert r0["best_epoch"] == 1
    assert r0["history"]["val_auc"][1] == r0["history"]["val_auc"][0]
    assert load_ranking_model(r0["model_path"]) is not None


def test_sparse_dist_train_pipeline_on_cpu(data, tmp_path, trained_dlrm):
    """TorchRec's TrainPipelineSparseDist drives the steps on CPU too, and trains exactly
    what the plain loop trains (same batches, same updates; only the overlap differs)."""
    config = _config(data, tmp_path, train_pipeline="sparse_dist")
    r0, r1 = _run(_spec("dlrm"), config, tmp_path / "out")
    assert r0 == r1
    assert r0["train_pipeline"] == "sparse_dist" and r0["epochs"] == EPOCHS
    assert max(r0["history"]["val_auc"]) > 0.7, r0["history"]
    _, (plain, _) = trained_dlrm  # the same config with the plain loop
    assert plain["train_pipeline"] == "plain"
    for key in ("train_loss", "val_loss", "val_auc"):
        np.testing.assert_allclose(r0["history"][key], plain["history"][key], rtol=1e-5)


# --------------------------------------------------------------------------- list validation


def _list_rows(seed: int = 5, per_user: int = 10) -> dict[str, np.ndarray]:
    """Validation *lists*: each user's ``per_user`` distinct items (a pair at most once)."""
    rows = _rows(N_USERS * per_user, seed)
    rng = np.random.default_rng(seed)
    rows["user"] = np.repeat(np.arange(N_USERS), per_user).astype(np.int64)
    rows["item"] = np.concatenate(
        [rng.choice(N_ITEMS, per_user, replace=False) for _ in range(N_USERS)]
    ).astype(np.int64)
    return rows


def _list_spec() -> RankingSpec:
    return dataclasses.replace(
        _spec(),
        list_ks=(5,),
        list_key="user",
        list_item="item",
        monitor="val_list_ndcg@5",
    )


def test_list_validator_scores_each_list_as_list_metrics_do(tmp_path):
    from recsys_kedro.evaluation.lists import list_metrics
    from recsys_kedro.training.ranking import ListValidator

    rows = _list_rows()
    folder = _write(tmp_path / "lists", rows)
    spec = _list_spec()
    torch.manual_seed(0)
    model = build_ranking_model(spec.model)
    validator = spec.make_validator(folder, folder)
    assert isinstance(validator, ListValidator)
    got = validator(RankingTrainTask(model).state_dict())
    scores = predict_proba(model, spec.model.layout.to_batch(_to_columns(rows)))
    positive = rows["label"] == 1
    want = list_metrics(
        rows["user"], rows["item"], scores, rows["user"][positive], rows["item"][positive], [5]
    )
    assert got == pytest.approx(
        {"val_list_ndcg@5": want["ndcg@5"], "val_list_recall@5": want["recall@5"]}
    )
    small = ListValidator(spec, validator.columns, chunk_rows=7)  # jagged chunks line up
    assert small(RankingTrainTask(model).state_dict()) == pytest.approx(got)
    assert _spec().make_validator(folder, folder) is None  # no lists: no validator
    with pytest.raises(ValueError, match="list_key"):
        dataclasses.replace(_spec(), list_ks=(5,))
    with pytest.raises(ValueError, match="monitor must be one of"):
        dataclasses.replace(_spec(), monitor="val_list_ndcg@5")


def test_the_kept_epoch_is_the_best_list_ndcg_on_two_ranks(data, tmp_path):
    folder = _write(tmp_path / "lists", _list_rows())
    config = _config(data, tmp_path, validation=folder)
    r0, r1 = _run(_list_spec(), config, tmp_path / "out")
    assert r0 == r1
    ndcg = r0["history"]["val_list_ndcg@5"]
    assert len(ndcg) == EPOCHS and r0["monitor"] == "val_list_ndcg@5"
    assert r0["best_epoch"] == int(np.argmax(ndcg)) + 1
