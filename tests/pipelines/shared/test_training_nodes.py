"""The shared training node launches TorchDistributor (2 local gloo processes) on tiny MDS
data; the two-tower spec node feeds it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_kedro.mds.block_writer import write_mds_blocks
from recsys_kedro.models.two_tower import model_from_file
from recsys_kedro.pipelines.shared.training.nodes import plot_training_curves, train_model
from recsys_kedro.pipelines.two_tower.nodes import two_tower_spec
from recsys_kedro.training.checkpointing import complete_checkpoints
from recsys_kedro.training.run import (
    TrainSettings,
    explain_fresh_start,
    identity_differences,
    run_fingerprint,
    run_identity,
)
from recsys_kedro.training.specs import spec_from_dict

COLUMNS = {"user_idx": "int64", "item_idx": "int64", "label": "int32", "rating": "float32"}
MODEL = {"embedding_dim": 8, "layer_sizes": [16, 8], "normalize": True}


def _launch(tmp_path, **overrides):
    launch = {
        "num_processes": 2,
        "local_mode": True,
        "use_gpu": False,
        "staging_dir": str(tmp_path / "staging"),
        "cache_dir": None,
        "progress": False,
        "checkpoints": None,
    }
    launch.update(overrides)
    return launch


def _params(tmp_path, **overrides):
    params = {
        "loss": "softmax",
        "temperature": 0.1,
        "drop_last": True,
        "epochs": 2,
        "batch_size": 32,
        "eval_batch_size": 64,
        "embedding_lr": 0.1,
        "dense_lr": 0.01,
        "seed": 1,
    }
    params.update(overrides)
    return params


def _split(spark, rng, n, n_users, n_items):
    u, i = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    rows = [(int(a), int(b), int(a % 2 == b % 2), 4.0) for a, b in zip(u, i, strict=True)]
    return spark.createDataFrame(rows, "user_idx long, item_idx long, label int, rating float")


def test_train_model_node_outputs_checkpoints_and_a_rerun_that_resumes(spark, tmp_path, caplog):
    """One node run through TorchDistributor (2 local ranks), then the same node again: its
    outputs, its checkpoints per run fingerprint, what a run on other data says of them, and
    a re-run on the same data that resumes. (The row layout's training path is covered in
    tests/training/test_two_tower_train.py.)"""
    rng = np.random.default_rng(0)
    blocks = dict(columns=COLUMNS, block_rows=64)
    train_rows = _split(spark, rng, 600, 10, 12)
    train = write_mds_blocks(train_rows, path=str(tmp_path / "t"), **blocks)
    val = write_mds_blocks(_split(spark, rng, 100, 10, 12), path=str(tmp_path / "v"), **blocks)
    popularity = pd.DataFrame({"item_idx": range(12), "n_positive": [5] * 12})
    keep = {"every_n_steps": 3, "keep_last": 1, "resume": True, "keep_after_success": True}
    params, launch = _params(tmp_path), _launch(tmp_path, checkpoints=keep)
    spec = two_tower_spec({"n_users": 10, "n_items": 12}, popularity, None, MODEL, params)
    assert spec_from_dict(spec).model.num_items == 12  # plain values that round-trip
    root = tmp_path / "checkpoints"

    model_file, history, first = train_model(train, val, spec, params, launch, str(root))
    model = model_from_file(model_file)
    assert model.ebc.embedding_bags["t_item"].weight.shape == (12, 8)
    assert [m["step"] for m in history["train_loss"]] == [1, 2]
    # No validation loss (an in-batch softmax is not comparable across batch sizes); the
    # per-epoch retrieval metrics under MLflow-safe names.
    assert set(history) == {
        "train_loss",
        "val_auc",
        "train_samples_per_s",
        "val_recall_at_10",
        "val_ndcg_at_10",
    }
    assert first["world_size"] == 2 and first["train_samples_per_s"] > 0
    ndcg = first["history"]["val_ndcg@10"]
    assert first["monitor"] == "val_ndcg@10"
    assert first["best_epoch"] == int(np.argmax(ndcg)) + 1  # the best validation epoch
    assert "model_path" not in first
    assert not list((tmp_path / "staging").glob("*.pt"))  # the staged model file is removed
    figure = plot_training_curves(first)
    assert len(figure.axes) == 4  # loss, AUC, recall@10, ndcg@10

    first_dir = root / first["run_fingerprint"]
    assert first["resumed_from_step"] is None and first["checkpoints_saved"] > 2
    assert 1 <= len(complete_checkpoints(str(first_dir))) <= 2  # keep_last=1 (+ the best epoch's)

    # The same rows, folder, row count and shard sizes, with the labels flipped (what another
    # label rule upstream gives): another run, which does not resume these checkpoints (they
    # are in another folder) and says why, as train() does before it launches.
    flipped = train_rows.withColumn("label", 1 - train_rows["label"])
    other = write_mds_blocks(flipped, path=str(tmp_path / "t"), **blocks)
    settings = TrainSettings.from_params(params, launch)
    identity = run_identity(spec, settings, train=other, validation=val)
    fingerprint = run_fingerprint(spec, settings, train=other, validation=val)
    assert fingerprint != first["run_fingerprint"]
    with caplog.at_level("INFO", logger="recsys_kedro.training.run"):
        notes = explain_fresh_start(str(root), fingerprint, identity)
    assert notes == [
        f"the checkpoints in {first_dir} are of another run (the train data changed since): "
        f"not resumed; this run (fingerprint {fingerprint}) starts fresh"
    ]
    assert notes[0] in caplog.text and (root / fingerprint / "run.json").is_file()
    train = write_mds_blocks(train_rows, path=str(tmp_path / "t"), **blocks)  # back again
    # ... is the first run's data again: exported anew (other shard names), the same content
    assert run_fingerprint(spec, settings, train=train, validation=val) == first["run_fingerprint"]
    assert identity_differences(identity, identity) == []

    # The same model, settings and data: the re-run continues after the last checkpoint (the
    # end of the last epoch), so nothing is trained again and the result is the same. It keeps
    # the default (keep_after_success: false, not part of the fingerprint), so once its model
    # is saved its checkpoints go.
    launch = _launch(tmp_path, checkpoints=dict(keep, keep_after_success=False))
    _, _, again = train_model(train, val, spec, params, launch, str(root))
    assert again["resumed_from_step"] == first["steps"] and again["steps"] == first["steps"]
    assert again["history"] == first["history"] and again["best_epoch"] == first["best_epoch"]
    assert again["run_fingerprint"] == first["run_fingerprint"]
    assert not first_dir.exists()


def test_run_fingerprint_follows_what_is_computed_not_how_it_is_launched(tmp_path):
    spec = {"kind": "two_tower", "spec": {"name": "two_tower"}}
    params, launch = _params(tmp_path), _launch(tmp_path)

    def fingerprint(spec=spec, params=params, **launch_overrides):
        return run_fingerprint(
            spec, TrainSettings.from_params(params, {**launch, **launch_overrides})
        )

    base = fingerprint()
    assert fingerprint(progress=True, local_mode=False, staging_dir="elsewhere") == base
    assert fingerprint(timeout_s=5, checkpoints={"keep_last": 9}) == base
    assert fingerprint(params=dict(params, embedding_lr=0.2)) != base
    assert fingerprint(num_processes=4) != base  # batches are per rank
    assert fingerprint(spec={"kind": "two_tower", "spec": {"name": "x"}}) != base


def test_settings_name_an_unknown_launch_key_and_a_missing_training_one(tmp_path):
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['num_process'\]"):
        TrainSettings.from_params(_params(tmp_path), _launch(tmp_path, num_process=4))
    params = {k: v for k, v in _params(tmp_path).items() if k != "batch_size"}
    with pytest.raises(ValueError, match=r"missing training setting\(s\) \['batch_size'\]"):
        TrainSettings.from_params(params, _launch(tmp_path))


def test_two_tower_spec_rejects_a_popularity_table_of_another_index(tmp_path):
    popularity = pd.DataFrame({"item_idx": range(5), "n_positive": [1] * 5})
    with pytest.raises(ValueError, match="same item index"):
        two_tower_spec({"n_users": 3, "n_items": 12}, popularity, None, MODEL, _params(tmp_path))


def test_train_model_names_the_parameter_and_its_file(tmp_path):
    popularity = pd.DataFrame({"item_idx": range(12), "n_positive": [1] * 12})
    spec = two_tower_spec({"n_users": 3, "n_items": 12}, popularity, None, MODEL, _params(tmp_path))
    with pytest.raises(ValueError, match=r"epochs must be >= 1.*parameters_two_tower\.yml"):
        train_model(None, None, spec, _params(tmp_path, epochs=0), _launch(tmp_path))


def test_two_tower_spec_takes_log_q_counts_from_the_chosen_column(tmp_path):
    popularity = pd.DataFrame(
        {"item_idx": range(4), "n_positive": [1, 0, 2, 0], "n_rated": [3, 1, 2, 5]}
    )
    stats = {"n_users": 3, "n_items": 4}

    def counts(**overrides):
        spec = two_tower_spec(stats, popularity, None, MODEL, _params(tmp_path, **overrides))
        return spec_from_dict(spec).item_counts

    assert counts() == (1, 0, 2, 0)  # default: positives
    assert counts(log_q="candidates") == (3, 1, 2, 5)
    assert counts(log_q="none") is None
    with pytest.raises(ValueError, match=r"log_q must be one of .*parameters_two_tower\.yml"):
        counts(log_q="items")
    spec = two_tower_spec(stats, popularity, None, MODEL, _params(tmp_path, mask_same_user=True))
    assert spec_from_dict(spec).mask_same_user is True
