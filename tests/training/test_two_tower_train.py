"""The shared trainer with the two-tower spec on 2 gloo processes (CPU), without Spark."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from streaming import MDSWriter

from recsys_kedro.mds import MDSFolder
from recsys_kedro.models.model_file import load_model_file
from recsys_kedro.models.two_tower import TwoTowerConfig, build_two_tower, load_two_tower
from recsys_kedro.training.config import TrainConfig
from recsys_kedro.training.two_tower import RetrievalValidator, TwoTowerSpec

from .spawn import fit_on_rank as train
from .spawn import run_on_ranks

N_USERS, N_ITEMS = 48, 36
#: ``weight`` rides along (a weighted label rule's rows); only a weighted spec reads it.
COLUMNS = {"user_idx": "int64", "item_idx": "int64", "label": "int32", "weight": "float32"}


def _write(path, rows):
    with MDSWriter(out=str(path), columns=COLUMNS, compression=None) as w:
        for u, i, y in rows:
            weight = np.float32(1 + i % 3)
            w.write(
                {"user_idx": np.int64(u), "item_idx": np.int64(i), "label": np.int32(y),
                 "weight": weight}
            )  # fmt: skip
    return MDSFolder(remote=None, local=str(path), num_samples=len(rows), columns=COLUMNS)


def _clustered_rows(rng, n):
    """Users like the items of their own cluster (u % 3 == i % 3): learnable structure."""
    users = rng.integers(0, N_USERS, n)
    items = rng.integers(0, N_ITEMS, n)
    labels = (users % 3 == items % 3).astype(int)
    return list(zip(users, items, labels, strict=True))


@pytest.fixture(scope="module")
def mds_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("mds")
    rng = np.random.default_rng(0)
    return _write(root / "train", _clustered_rows(rng, 3000)), _write(
        root / "val", _clustered_rows(rng, 500)
    )


def _config(folders, tmp_path, loss="softmax", temperature=0.1, spec_overrides=None, **overrides):
    """(spec, train config) of a small run."""
    train_folder, val_folder = folders
    counts = np.bincount(
        [i for i in range(N_ITEMS) for _ in range(1 + i % 5)], minlength=N_ITEMS
    ).tolist()
    spec = TwoTowerSpec(
        model=TwoTowerConfig(N_USERS, N_ITEMS, embedding_dim=16, layer_sizes=(32, 16)),
        loss=loss,
        temperature=temperature,
        item_counts=tuple(counts),
        **(spec_overrides or {}),
    )
    kwargs = dict(
        train=train_folder,
        validation=val_folder,
        model_path=str(tmp_path / "ckpt" / "model.pt"),
        epochs=3,
        batch_size=64,
        eval_batch_size=128,
        embedding_lr=0.1,
        dense_lr=5e-3,
        seed=7,
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )
    kwargs.update(overrides)
    return spec, TrainConfig(**kwargs)


@pytest.fixture(scope="module")
def two_rank_run(mds_folders, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run1")
    config = _config(mds_folders, tmp)
    return config, run_on_ranks(train, config, world_size=2, out_dir=tmp / "out")


def test_every_rank_returns_rank0_result(two_rank_run):
    _, (r0, r1) = two_rank_run
    assert r0 == r1
    assert r0["world_size"] == 2 and r0["epochs"] == 3
    assert r0["train_pipeline"] == "plain" and r0["device"] == "cpu"
    assert len(r0["history"]["train_loss"]) == 3


def test_each_epoch_is_judged_by_validation_retrieval_metrics(two_rank_run):
    _, (r0, _) = two_rank_run
    history = r0["history"]
    assert "val_loss" not in history  # in-batch softmax: not comparable with train_loss
    assert len(history["val_ndcg@10"]) == len(history["val_recall@10"]) == 3
    assert all(0.0 <= v <= 1.0 for v in history["val_ndcg@10"] + history["val_recall@10"])
    assert r0["monitor"] == "val_ndcg@10"
    assert r0["best_epoch"] == int(np.argmax(history["val_ndcg@10"])) + 1


def test_the_kept_weights_are_the_best_epochs(two_rank_run, mds_folders):
    """Re-scoring the saved checkpoint reproduces the kept epoch's validation NDCG."""
    (spec, _), (r0, _) = two_rank_run
    checkpoint = load_model_file(r0["model_path"])
    state = {f"two_tower.{k}": v for k, v in checkpoint["state_dict"].items()}
    metrics = RetrievalValidator.from_folders(spec, *mds_folders)(state)
    kept = r0["history"]["val_ndcg@10"][r0["best_epoch"] - 1]
    assert metrics["val_ndcg@10"] == pytest.approx(kept, abs=1e-6)


def test_a_worse_last_epoch_is_not_kept(mds_folders, tmp_path):
    """A learning rate that wrecks training after a good start: the best epoch is kept, and
    patience stops the run."""
    spec, config = _config(
        mds_folders, tmp_path, epochs=6, embedding_lr=3.0, dense_lr=0.3, patience=2
    )
    (r0, _) = run_on_ranks(train, (spec, config), world_size=2, out_dir=tmp_path / "o")
    ndcg = r0["history"]["val_ndcg@10"]
    assert r0["best_epoch"] == int(np.argmax(ndcg)) + 1
    assert r0["best_epoch"] < r0["epochs"], f"the scenario needs a worse last epoch: {ndcg}"
    checkpoint = load_model_file(r0["model_path"])
    state = {f"two_tower.{k}": v for k, v in checkpoint["state_dict"].items()}
    rescored = RetrievalValidator.from_folders(spec, *mds_folders)(state)["val_ndcg@10"]
    assert rescored == pytest.approx(max(ndcg), abs=1e-6)
    if r0["stopped_early"]:
        assert r0["epochs"] == r0["best_epoch"] + 2


def test_tables_are_sharded_across_both_ranks(two_rank_run):
    _, (r0, _) = two_rank_run
    assert set(r0["sharding"]) == {"t_user", "t_item"}
    ranks = {spec.split("ranks ")[1] for spec in r0["sharding"].values()}
    assert len(ranks) == 2, f"both tables on one rank: {r0['sharding']}"


def test_training_learns_and_reports_throughput(two_rank_run):
    _, (r0, _) = two_rank_run
    history = r0["history"]
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["val_auc"][-1] > 0.7, history
    # 2 ranks x 64 rows per step, drop_last: rows seen are whole global batches
    assert r0["n_train_rows_seen"] % 128 == 0 and r0["n_train_rows_seen"] > 0
    assert r0["train_samples_per_s"] > 0


def test_gathered_checkpoint_is_complete_and_loadable(two_rank_run):
    _, (r0, _) = two_rank_run
    model = load_two_tower(r0["model_path"])  # strict load: every key present
    emb = model.ebc.embedding_bags["t_user"].weight
    assert emb.shape == (N_USERS, 16)
    assert torch.isfinite(emb).all() and emb.abs().sum() > 0
    users = model.encode_users(torch.arange(N_USERS))
    items = model.encode_items(torch.arange(N_ITEMS))
    scores = users @ items.T
    same = (torch.arange(N_USERS)[:, None] % 3) == (torch.arange(N_ITEMS)[None, :] % 3)
    assert scores[same].mean() > scores[~same].mean()


def test_bce_loss_trains_too_with_row_weights(mds_folders, tmp_path):
    """BCE, and the rows' weights (a WeightedBatch) through the loader and the sharded
    trainer: the weighted loss trains as well."""
    config = _config(
        mds_folders, tmp_path, loss="bce", epochs=2, temperature=1.0,
        spec_overrides={"weighted": True},
    )  # fmt: skip
    assert config[0].layout.weight == "weight"
    (r0, _) = run_on_ranks(train, config, world_size=2, out_dir=tmp_path / "o")
    assert r0["history"]["val_auc"][-1] > 0.6


def test_uniform_negatives_train_through_the_sharded_tables(two_rank_run, mds_folders, tmp_path):
    """The drawn negatives ride in the batch's KJT, through the sharded item table."""
    config = _config(mds_folders, tmp_path, spec_overrides={"uniform_negatives": 2})
    (r0, r1) = run_on_ranks(train, config, world_size=2, out_dir=tmp_path / "o")
    assert r0 == r1
    _, (plain, _) = two_rank_run
    assert r0["history"]["train_loss"] != plain["history"]["train_loss"]  # they took part
    assert r0["history"]["val_auc"][-1] > 0.7  # and it still learns the clusters
    # The checkpoint is the plain model: it serves without the negative features.
    assert load_two_tower(r0["model_path"]).negative_features == ()


# ----------------------------------------------------------------------- the validator alone


def _spec(**overrides):
    return TwoTowerSpec(
        model=TwoTowerConfig(N_USERS, N_ITEMS, embedding_dim=8, layer_sizes=(8,)), **overrides
    )


def test_validator_scores_like_the_test_evaluation():
    """Same numbers as full_catalogue_topk_metrics on the model's own embeddings."""
    from recsys_kedro.evaluation.retrieval import (
        embedding_score_fn,
        full_catalogue_topk_metrics,
    )

    torch.manual_seed(0)
    spec = _spec(validation_ks=(5, 10))
    model = build_two_tower(spec.model, device="cpu").eval()
    state = {f"two_tower.{k}": v for k, v in model.state_dict().items()}
    rng = np.random.default_rng(1)
    train_u, train_i = rng.integers(0, N_USERS, 200), rng.integers(0, N_ITEMS, 200)
    val_u, val_i = rng.integers(0, N_USERS, 60), rng.integers(0, N_ITEMS, 60)
    validator = RetrievalValidator(
        spec, train_users=train_u, train_items=train_i, val_users=val_u, val_items=val_i
    )
    got = validator(state)
    with torch.no_grad():
        users = model.encode_users(torch.arange(N_USERS))
        items = model.encode_items(torch.arange(N_ITEMS))
    want = full_catalogue_topk_metrics(
        embedding_score_fn(users, items), N_ITEMS, val_u, val_i, train_u, train_i, ks=(5, 10)
    )
    assert set(got) == {"val_recall@5", "val_ndcg@5", "val_recall@10", "val_ndcg@10"}
    for key, value in got.items():
        assert value == pytest.approx(want[key[len("val_") :]])


def test_validator_samples_users_when_capped():
    spec = _spec(validation_max_users=5, validation_seed=3)
    rng = np.random.default_rng(2)
    validator = RetrievalValidator(
        spec,
        train_users=rng.integers(0, N_USERS, 300),
        train_items=rng.integers(0, N_ITEMS, 300),
        val_users=np.arange(N_USERS),
        val_items=np.arange(N_USERS) % N_ITEMS,
    )
    assert np.unique(validator.val_users).size == 5
    assert set(validator.exclude_users) <= set(validator.val_users)


def test_validator_needs_validation_positives():
    with pytest.raises(ValueError, match="no positive interaction"):
        RetrievalValidator(
            _spec(),
            train_users=np.array([0]),
            train_items=np.array([0]),
            val_users=np.array([], dtype=np.int64),
            val_items=np.array([], dtype=np.int64),
        )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"monitor": "val_ndcg@20"}, "monitor must be"),
        ({"validation_ks": ()}, "validation_ks"),
        ({"validation_max_users": 0}, "validation_max_users"),
    ],
)
def test_spec_rejects_bad_validation_settings(overrides, match):
    with pytest.raises(ValueError, match=match):
        _spec(**overrides)


def test_a_spec_without_retrieval_validation_has_no_validator_and_no_such_monitor():
    """A refit on train + validation has nothing held out to rank (the refit baseline)."""
    config = TwoTowerConfig(num_users=3, num_items=4)
    spec = TwoTowerSpec(model=config, monitor=None, validate_retrieval=False)
    assert spec.make_validator(None, None) is None  # the folders are not even read
    assert TwoTowerSpec(model=config, monitor="val_auc", validate_retrieval=False).monitor
    with pytest.raises(ValueError, match=r"monitor must be None or one of \['val_auc'\]"):
        TwoTowerSpec(model=config, validate_retrieval=False)  # the default monitor needs it
