"""Sharded training checkpoints with ``torch.distributed.checkpoint`` (DCP), and resumption.

Each rank writes its own shards of the embedding tables, its share of the optimizer state and
(deduplicated) the replicated dense part: nothing is gathered to one process. A checkpoint is
one folder per save, named by the global training step after which it was taken (``_end``:
at an epoch's end, after validation; it supersedes a mid-epoch one of the same step)::

    <directory>/step_000000120_end/
        __0_0.distcp  __1_0.distcp  ...   one file per rank (DCP): tensors only
        .metadata                         DCP's index, written once every rank's files are
        TRAINER.json                      the loop's own state (below), plain JSON
        COMPLETE.json                     written last, by rank 0, after DCP returned on every
                                          rank, with the SHA-256 of every other file: a
                                          folder without it is never loaded

Besides the model and the optimizer, a checkpoint holds the loop's own state in
``TRAINER.json``: the epoch and step, the history so far, the best epoch and, for every rank,
its loader state (``BlockBatchLoader.state_dict()``), its sampler generator state and its
partial sums of the epoch in progress. Every rank's share is gathered (a few hundred bytes) so
the same value is written once, and on resume each rank takes its own.

**What is trusted.** DCP's ``.metadata`` is a pickle, and a pickle can run code when it is
loaded. So before anything of a checkpoint is read, every file is checked against the hashes
in its ``COMPLETE.json`` (the ranks share the reading) and a checkpoint with a missing, extra
or changed file, or a marker without hashes, is refused. This catches corruption and a file
swapped or edited in a shared folder; it does not stop someone who can also rewrite
``COMPLETE.json``: the checkpoint folder must be writable by the training job alone.

The caller chooses the directory; keep one directory per training configuration (a different
model or data would not load, or worse, would load).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import fsspec
import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

COMPLETE = "COMPLETE.json"
TRAINER = "TRAINER.json"
STATE_VERSION = 2  # 2: the trainer state in TRAINER.json and file hashes in the marker
_STEP_DIR = re.compile(r"^step_(\d+)(_end)?$")


@dataclass(frozen=True)
class CheckpointPolicy:
    """When to write sharded checkpoints, and whether to resume from them (picklable).

    ``directory``: this run's folder (one per training configuration: a checkpoint is only
    valid for the model, data and settings that wrote it). ``every_n_steps``: also after every
    N global training steps (``None``: at epoch ends only). ``keep_last``: complete checkpoints
    kept (the best epoch's is kept as well). ``resume``: continue from the newest complete
    checkpoint in ``directory`` if there is one. ``keep_after_success``: keep ``directory``
    once the model is saved (by default the trainer removes it: checkpoints exist to survive
    a failure).
    """

    directory: str
    every_n_steps: int | None = None
    keep_last: int = 2
    resume: bool = True
    keep_after_success: bool = False

    def __post_init__(self) -> None:
        if not self.directory:
            raise ValueError("the checkpoint directory is empty")
        if self.every_n_steps is not None and int(self.every_n_steps) < 1:
            raise ValueError(f"every_n_steps must be >= 1 or null, got {self.every_n_steps}")
        if int(self.keep_last) < 1:
            raise ValueError(f"keep_last must be >= 1, got {self.keep_last}")


def step_path(directory: str, step: int, epoch_end: bool = False) -> str:
    """The folder of the checkpoint taken after global step ``step``."""
    return f"{directory.rstrip('/')}/step_{step:09d}{'_end' if epoch_end else ''}"


def _step_folders(directory: str) -> list[tuple[tuple[int, bool], str, bool]]:
    """``((step, epoch_end), path, complete)`` of every step folder under ``directory``,
    oldest first (at the same step, the epoch-end one is the newer)."""
    fs, root = fsspec.core.url_to_fs(directory)
    if not fs.isdir(root):
        return []
    found = []
    for entry in fs.ls(root, detail=False):
        match = _STEP_DIR.match(entry.rstrip("/").rsplit("/", 1)[-1])
        if match:
            key = (int(match.group(1)), match.group(2) is not None)
            path = step_path(directory, *key)
            found.append((key, path, fs.exists(f"{entry.rstrip('/')}/{COMPLETE}")))
    return sorted(found)


def complete_checkpoints(directory: str) -> list[str]:
    """Every complete checkpoint under ``directory``, oldest first."""
    return [path for _, path, complete in _step_folders(directory) if complete]


def latest_complete(directory: str) -> str | None:
    """The newest complete checkpoint, or ``None``. Partial folders (a rank died while
    writing) are skipped."""
    found = complete_checkpoints(directory)
    return found[-1] if found else None


def prune(directory: str, keep_last: int, protect: set[str] = frozenset()) -> list[str]:
    """Delete all but the ``keep_last`` newest complete checkpoints (never a path in
    ``protect``, e.g. the best epoch's) and every partial folder older than the newest
    complete one. Call it on one rank, with no checkpoint being written. Returns what it
    deleted."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    folders = _step_folders(directory)
    complete = [(key, path) for key, path, done in folders if done]
    keep = {path for _, path in complete[-keep_last:]} | set(protect)
    newest = complete[-1][0] if complete else None
    fs, _ = fsspec.core.url_to_fs(directory)
    deleted = []
    for key, path, done in folders:
        stale_partial = not done and newest is not None and key < newest
        if (done and path not in keep) or stale_partial:
            fs.rm(fsspec.core.url_to_fs(path)[1], recursive=True)
            deleted.append(path)
    return deleted


def remove_partial(directory: str) -> list[str]:
    """Delete every partial step folder (left by a run that died while saving). Call it on
    one rank before a resumed run writes anything."""
    fs, _ = fsspec.core.url_to_fs(directory)
    deleted = []
    for _, path, done in _step_folders(directory):
        if not done:
            fs.rm(fsspec.core.url_to_fs(path)[1], recursive=True)
            deleted.append(path)
    return deleted


def encode_tensor(t: torch.Tensor) -> str:
    """A small CPU uint8 tensor (e.g. a generator state) as text for the JSON trainer state."""
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def decode_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _materialize_optimizer_state(optimizer: Any) -> None:
    """Give every lazily initialised optimizer (Adam) its state tensors, so DCP can load into
    them in place. The fused embedding optimizers have theirs from the start. A step with zero
    gradients leaves Adam's parameters unchanged (no weight decay); the loaded state then
    replaces its counters."""
    parts = getattr(optimizer, "optimizers", None)
    for _, part in parts if parts is not None else [("", optimizer)]:
        if hasattr(part, "init_state") and not part.state:
            part.init_state()


class CheckpointIntegrityError(RuntimeError):
    """A checkpoint whose files do not match the hashes in its completion marker."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (disk full, a folder that is not writable)."""


def _write_error(path: str, exc: BaseException) -> str:
    from recsys_kedro.training.storage import free_space

    return (
        f"writing the checkpoint {path} failed: {_first_cause(exc)} "
        f"({free_space(path)}); free space there, or point the checkpoints elsewhere"
    )


def _first_cause(exc: BaseException) -> str:
    """DCP's ``CheckpointException`` holds every rank's exception and traceback: the first
    rank's exception is the story."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and failures:
        rank, wrapped = min(failures.items())
        inner = wrapped[0] if isinstance(wrapped, tuple) else wrapped
        return f"{type(inner).__name__} on rank {rank}: {inner}"
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def _reading(path: str) -> Iterator[None]:
    """A failed DCP load as an ``Exception`` that names the checkpoint (DCP raises a
    ``BaseException``, which the trainer's failure handling would not see)."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        yield
    except CheckpointException as exc:
        raise RuntimeError(f"reading the checkpoint {path} failed: {_first_cause(exc)}") from exc


@contextmanager
def _naming_the_path(path: str) -> Iterator[None]:
    """DCP's own errors name neither the folder nor the free space: add both. (Its
    ``CheckpointException`` is a ``BaseException``, which ``except Exception`` misses.)"""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        yield
    except (Exception, CheckpointException) as exc:
        raise CheckpointWriteError(_write_error(path, exc)) from exc


def _sha256(fs: Any, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _shared_hashes(path: str, names: list[str]) -> dict[str, str]:
    """The SHA-256 of ``names`` in folder ``path``, each rank hashing its share (a collective:
    a checkpoint is read once in all, not once per rank)."""
    fs, root = fsspec.core.url_to_fs(path)
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = {name: _sha256(fs, f"{root}/{name}") for name in names[rank::world]}
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine)
    return {name: digest for part in gathered for name, digest in part.items()}


def _files(path: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(path)
    names = [entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(root, detail=False)]
    return sorted(name for name in names if name != COMPLETE)


def save_checkpoint(
    path: str,
    model: nn.Module,
    optimizer: Any,
    trainer_state: dict[str, Any],
) -> str:
    """Write a sharded checkpoint to the new folder ``path`` on every rank (a collective) and
    mark it complete, with the hash of every file it holds.

    ``trainer_state`` must be the same on every rank (gather rank-local parts first) and
    JSON-serialisable. Returns ``path``.
    """
    import torch.distributed.checkpoint as dcp

    fs, root = fsspec.core.url_to_fs(path)
    if fs.exists(f"{root}/{COMPLETE}"):
        raise FileExistsError(f"{path} is already a complete checkpoint; not overwriting it")
    start = time.perf_counter()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    with _naming_the_path(path):
        dcp.save(state, checkpoint_id=path)  # a rank that fails it fails it on every rank
    names: list[Any] = [None]
    problem: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            with fs.open(f"{root}/{TRAINER}", "w") as f:
                json.dump({"version": STATE_VERSION, **trainer_state}, f)
            names = [_files(path)]
        except OSError as exc:
            problem = [_write_error(path, exc)]
    dist.broadcast_object_list(problem, src=0)  # every rank fails with rank 0's reason
    if problem[0] is not None:
        raise CheckpointWriteError(problem[0])
    dist.broadcast_object_list(names, src=0)
    hashes = _shared_hashes(path, names[0])
    if dist.get_rank() == 0:
        marker = {"epoch": trainer_state.get("epoch"), "saved_at": time.time(), "sha256": hashes}
        try:
            with fs.open(f"{root}/{COMPLETE}", "w") as f:
                json.dump(marker, f)
        except OSError as exc:
            problem = [_write_error(path, exc)]
    dist.broadcast_object_list(problem, src=0)
    if problem[0] is not None:
        raise CheckpointWriteError(problem[0])
    # Nobody moves on (and possibly prunes or stops) before the marker exists.
    dist.barrier()
    logger.debug("checkpoint %s written in %.2f s", path, time.perf_counter() - start)
    return path


def verify_checkpoint(path: str) -> None:
    """Check every file of a complete checkpoint against the hashes in its marker, before any
    of it is read (a collective).

    Raises:
        CheckpointIntegrityError: on every rank, naming each missing, extra or changed file.
    """
    fs, root = fsspec.core.url_to_fs(path)
    if not fs.exists(f"{root}/{COMPLETE}"):
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {COMPLETE})")
    expected = json.loads(fs.cat_file(f"{root}/{COMPLETE}")).get("sha256")
    if not isinstance(expected, dict) or not expected:
        raise CheckpointIntegrityError(
            f"{path}: its {COMPLETE} lists no file hashes (written by an older version, or not "
            "by this trainer), so it cannot be verified and is not loaded; delete the folder "
            "(or set checkpoints.resume: false) to start over"
        )
    present = _files(path)
    problems = [f"{name} is missing" for name in sorted(set(expected) - set(present))]
    problems += [f"{name} is not in the marker" for name in sorted(set(present) - set(expected))]
    found = _shared_hashes(path, sorted(set(expected) & set(present)))
    problems += [
        f"{name} has changed" for name, digest in found.items() if digest != expected[name]
    ]
    if problems:
        raise CheckpointIntegrityError(
            f"{path} does not match its {COMPLETE} and is not loaded: {'; '.join(problems)}. "
            "The files were corrupted or changed after the checkpoint was written; delete the "
            "folder (or set checkpoints.resume: false) to start over"
        )


def load_checkpoint(path: str, model: nn.Module, optimizer: Any) -> dict[str, Any]:
    """Verify a complete checkpoint, load it into ``model`` and ``optimizer`` in place, on
    every rank (a collective); return the trainer state saved with it."""
    import torch.distributed.checkpoint as dcp

    verify_checkpoint(path)
    _materialize_optimizer_state(optimizer)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    with _reading(path):
        dcp.load(state, checkpoint_id=path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    fs, root = fsspec.core.url_to_fs(path)
    trainer = json.loads(fs.cat_file(f"{root}/{TRAINER}"))
    if trainer.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: unknown trainer state version {trainer.get('version')!r}")
    return trainer


def load_model_weights(path: str, model: nn.Module) -> None:
    """Verify a complete checkpoint and load only the model's weights (a collective)."""
    import torch.distributed.checkpoint as dcp

    verify_checkpoint(path)
    state = {"model": model.state_dict()}
    with _reading(path):
        dcp.load(state, checkpoint_id=path)
    model.load_state_dict(state["model"])
