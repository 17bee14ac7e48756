"""Sharded checkpoints and resumption of the shared ``fit`` (2 gloo processes on CPU).

Every training row carries its id in the dense feature ``d1`` (``id / 4096``, exact in
float32), and a recording wrapper around the ranking task appends the ids of every batch it
trains on to ``rank<N>.txt``. So the rows a rank consumed, in order, are on disk, also for a
rank that was killed: a resumed run must continue with exactly the rows an uninterrupted run
trained on after the checkpoint, none twice, none skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from recsys_kedro.models.model_file import load_model_file
from recsys_kedro.training.checkpointing import (
    COMPLETE,
    CheckpointPolicy,
    complete_checkpoints,
    decode_tensor,
    encode_tensor,
    latest_complete,
    prune,
    remove_partial,
    step_path,
)
from recsys_kedro.training.config import TrainConfig
from recsys_kedro.training.ranking import RankingSpec

from .spawn import fit_on_rank, run_on_ranks
from .test_ranking_train import _rows, _spec, _write

ID_SCALE = 4096.0
EVERY = 10


class _Recorder(nn.Module):
    """The ranking task, plus: the ids of every training batch appended to a file, and a
    planted failure (SIGKILL or an exception) on one rank at its N-th training step."""

    def __init__(self, task: nn.Module, record_dir: str, fail_rank: int, fail_at: int, how: str):
        super().__init__()
        self.task = task
        self.record_dir = record_dir
        self.fail_rank, self.fail_at, self.how = fail_rank, fail_at, how
        self.steps = 0

    def forward(self, batch):
        if self.training:
            self.steps += 1
            rank = int(os.environ["RANK"])
            if rank == self.fail_rank and self.steps == self.fail_at:
                if self.how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise ValueError(f"planted failure on rank {rank}")
            ids = torch.round(batch.dense_features[:, 1] * ID_SCALE).long().tolist()
            with open(Path(self.record_dir, f"rank{rank}.txt"), "a") as f:
                f.write(" ".join(map(str, ids)) + "\n")
        return self.task(batch)


@dataclasses.dataclass(frozen=True)
class RecordingSpec(RankingSpec):
    record_dir: str = ""
    fail_rank: int = -1
    fail_at: int = 0
    fail_how: str = "kill"

    def build_task(self, device: torch.device) -> nn.Module:
        task = super().build_task(device)
        return _Recorder(task, self.record_dir, self.fail_rank, self.fail_at, self.fail_how)

    def model_file(self, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        return super().model_file({k.removeprefix("task."): v for k, v in state_dict.items()})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_mds")
    train = _rows(4000, seed=1)
    train["d1"] = (np.arange(4000) / ID_SCALE).astype(np.float32)  # the row id
    return {
        "train": _write(root / "train", train),
        "validation": _write(root / "val", _rows(800, 2)),
    }


def _spec_for(record_dir: Path, **failure) -> RecordingSpec:
    record_dir.mkdir(parents=True, exist_ok=True)
    base = _spec()
    return RecordingSpec(model=base.model, name=base.name, record_dir=str(record_dir), **failure)


def _config(data, root: Path, **overrides) -> TrainConfig:
    kwargs = dict(
        train=data["train"],
        validation=data["validation"],
        model_path=str(root / "model.pt"),
        epochs=3,
        batch_size=64,
        eval_batch_size=256,
        embedding_lr=0.1,
        dense_lr=5e-3,
        seed=7,
        cache_dir=str(root / "cache"),
        progress=False,
        checkpoints=CheckpointPolicy(
            str(root / "checkpoints"), every_n_steps=EVERY, keep_last=2, keep_after_success=True
        ),
        timeout_s=60,
    )
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def _records(record_dir: Path, rank: int) -> list[list[int]]:
    lines = Path(record_dir, f"rank{rank}.txt").read_text().splitlines()
    return [[int(x) for x in line.split()] for line in lines]


def _run(spec, config, out: Path) -> dict:
    return run_on_ranks(fit_on_rank, (spec, config), world_size=2, out_dir=out)[0]


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    spec = _spec_for(root / "records")
    result = _run(spec, _config(data, root), root / "out")
    return {
        "root": root,
        "result": result,
        "records": [_records(root / "records", r) for r in (0, 1)],
    }


# --------------------------------------------------------------------------- folders (no ranks)


def _fake(directory: Path, name: str, complete: bool) -> None:
    (directory / name).mkdir(parents=True)
    (directory / name / "__0_0.distcp").write_bytes(b"x")
    if complete:
        (directory / name / COMPLETE).write_text("{}")


def test_only_complete_checkpoints_count_and_epoch_ends_supersede(tmp_path):
    _fake(tmp_path, "step_000000010", True)
    _fake(tmp_path, "step_000000020", True)
    _fake(tmp_path, "step_000000020_end", True)
    _fake(tmp_path, "step_000000030", False)  # a rank died while writing it
    (tmp_path / "notes").mkdir()
    assert latest_complete(str(tmp_path)) == step_path(str(tmp_path), 20, epoch_end=True)
    assert len(complete_checkpoints(str(tmp_path))) == 3
    assert remove_partial(str(tmp_path)) == [step_path(str(tmp_path), 30)]
    assert latest_complete(str(tmp_path / "missing")) is None


def test_prune_keeps_the_newest_and_the_protected(tmp_path):
    for step in (10, 20, 30, 40):
        _fake(tmp_path, f"step_{step:09d}", True)
    _fake(tmp_path, "step_000000015", False)
    _fake(tmp_path, "step_000000050", False)  # newer than every complete one: maybe in progress
    best = step_path(str(tmp_path), 10)
    deleted = prune(str(tmp_path), keep_last=2, protect={best})
    assert sorted(deleted) == [step_path(str(tmp_path), s) for s in (15, 20)]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["step_000000010", "step_000000030", "step_000000040", "step_000000050"]
    with pytest.raises(ValueError, match="keep_last"):
        prune(str(tmp_path), keep_last=0)


def test_policy_and_generator_state_round_trip():
    with pytest.raises(ValueError, match="every_n_steps"):
        CheckpointPolicy("x", every_n_steps=0)
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointPolicy("x", keep_last=0)
    g = torch.Generator().manual_seed(3)
    g.manual_seed(5)
    state = g.get_state()
    assert torch.equal(decode_tensor(encode_tensor(state)), state)


def test_checkpoints_need_the_block_layout(data, tmp_path):
    rows = dataclasses.replace(data["train"], layout="row")
    with pytest.raises(ValueError, match="block layout"):
        _config(data, tmp_path, train=rows)


# --------------------------------------------------------------------------- on 2 ranks


@pytest.mark.resume
def test_each_rank_writes_its_own_shards_and_old_checkpoints_are_pruned(uninterrupted):
    from torch.distributed.checkpoint import FileSystemReader

    result = uninterrupted["result"]
    directory = uninterrupted["root"] / "checkpoints"
    kept = complete_checkpoints(str(directory))
    # keep_last=2, plus the best epoch's (when it is not among them).
    assert 2 <= len(kept) <= 3
    assert result["checkpoints_saved"] == result["steps"] // EVERY + result["epochs"]
    metadata = FileSystemReader(kept[-1]).read_metadata()
    files_by_table: dict[str, set[str]] = {}
    for index, info in metadata.storage_data.items():
        for table in ("t_user", "t_item", "t_tags"):
            if index.fqn.startswith("model.") and f"embedding_bags.{table}.weight" in index.fqn:
                files_by_table.setdefault(table, set()).add(info.relative_path)
    for table, placement in result["sharding"].items():
        ranks = placement.split("ranks ")[1].strip("[]").split(",")
        expected = {f"__{int(r)}_0.distcp" for r in ranks}
        assert files_by_table[table] == expected, (table, placement)
    # The marker holds the hash of every other file; the trainer's state is plain JSON.
    latest = Path(kept[-1])
    marker = json.loads((latest / COMPLETE).read_text())
    files = {p.name for p in latest.iterdir()} - {COMPLETE}
    assert set(marker["sha256"]) == files and {".metadata", "TRAINER.json"} <= files
    assert (
        marker["sha256"]["TRAINER.json"]
        == hashlib.sha256((latest / "TRAINER.json").read_bytes()).hexdigest()
    )
    assert json.loads((latest / "TRAINER.json").read_text())["world_size"] == 2


@pytest.mark.resume
def test_a_killed_rank_resumes_from_the_last_complete_checkpoint_row_for_row(
    data, uninterrupted, tmp_path
):
    steps_per_epoch = len(uninterrupted["records"][0]) // 3
    kill_at = steps_per_epoch + EVERY + 3  # rank 1, in epoch 2, after a mid-epoch checkpoint
    spec = _spec_for(tmp_path / "records", fail_rank=1, fail_at=kill_at, fail_how="kill")
    config = _config(data, tmp_path)
    start = time.perf_counter()
    with pytest.raises(Exception, match="SIGKILL|signal|exit"):
        _run(spec, config, tmp_path / "out1")
    assert time.perf_counter() - start < 120  # the surviving rank did not hang
    directory = tmp_path / "checkpoints"
    resume_from = latest_complete(str(directory))
    assert resume_from is not None and not resume_from.endswith("_end")
    # A partially written, newer checkpoint (no COMPLETE marker) must never be loaded: make
    # it a copy of an older epoch-end one, so loading it would be visible in the rows.
    partial = step_path(str(directory), kill_at)
    shutil.copytree(complete_checkpoints(str(directory))[0], partial)
    os.remove(Path(partial, COMPLETE))
    killed = [_records(tmp_path / "records", r) for r in (0, 1)]

    (tmp_path / "records2").mkdir()
    resumed = _run(_spec_for(tmp_path / "records2"), config, tmp_path / "out2")

    assert resumed["resumed_from_step"] == int(Path(resume_from).name.split("_")[1])
    assert not Path(partial).exists()
    done = resumed["resumed_from_step"]
    for rank in (0, 1):
        again = _records(tmp_path / "records2", rank)
        assert len(killed[rank]) > done  # some steps after the checkpoint were lost
        assert killed[rank][:done] + again == uninterrupted["records"][rank]
    expected = uninterrupted["result"]
    assert resumed["best_epoch"] == expected["best_epoch"]
    for key, values in expected["history"].items():
        if key != "train_samples_per_s":
            np.testing.assert_allclose(resumed["history"][key], values, rtol=1e-5, atol=1e-6)
    ours = load_model_file(resumed["model_path"])["state_dict"]
    theirs = load_model_file(expected["model_path"])["state_dict"]
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.resume
def test_resume_refuses_another_batch_size(data, uninterrupted, tmp_path):
    shutil.copytree(uninterrupted["root"] / "checkpoints", tmp_path / "checkpoints")
    config = _config(data, tmp_path, batch_size=32)
    with pytest.raises(Exception, match="batch_size=64, this run has batch_size=32"):
        _run(_spec_for(tmp_path / "records"), config, tmp_path / "out")


@pytest.mark.resume
def test_a_tampered_checkpoint_is_refused_before_it_is_read(data, uninterrupted, tmp_path):
    shutil.copytree(uninterrupted["root"] / "checkpoints", tmp_path / "checkpoints")
    latest = Path(latest_complete(str(tmp_path / "checkpoints")))
    shard = latest / "__1_0.distcp"
    content = bytearray(shard.read_bytes())
    content[len(content) // 2] ^= 0xFF  # one byte of rank 1's tables
    shard.write_bytes(bytes(content))
    with pytest.raises(
        Exception, match=r"does not match its COMPLETE.json.*__1_0.distcp has changed"
    ):
        _run(_spec_for(tmp_path / "records"), _config(data, tmp_path), tmp_path / "out")


@pytest.mark.resume
def test_a_checkpoint_that_cannot_be_written_names_its_folder_and_the_free_space(data, tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    with pytest.raises(
        Exception, match=r"writing the checkpoint .*checkpoints/step_\d+ failed.*MB free"
    ):
        _run(_spec_for(tmp_path / "records"), _config(data, tmp_path), tmp_path / "out")


@pytest.mark.resume
def test_a_raising_rank_fails_the_run_promptly(data, tmp_path):
    spec = _spec_for(tmp_path / "records", fail_rank=1, fail_at=5, fail_how="raise")
    start = time.perf_counter()
    with pytest.raises(Exception, match="planted failure on rank 1"):
        _run(spec, _config(data, tmp_path, checkpoints=None), tmp_path / "out")
    assert time.perf_counter() - start < 120
