"""The loop's resumable state and its sharded checkpoints, as the trainer uses them: what a
checkpoint carries besides the weights (:class:`LoopState`), each rank's loader state after
every trained batch (:class:`StateTrail`), and saving, pruning and restoring
(:class:`Checkpointer`; the files themselves: :mod:`recsys_kedro.training.checkpointing`)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import fsspec
import torch
from torch import nn

from recsys_kedro.models.batch import Batch
from recsys_kedro.training.checkpointing import CheckpointPolicy
from recsys_kedro.training.config import TrainConfig
from recsys_kedro.training.distributed import DistContext, on_main
from recsys_kedro.training.sharding import snapshot_local_state
from recsys_kedro.training.steps import StepHook

logger = logging.getLogger(__name__)


@dataclass
class LoopState:
    """The training loop's progress: what a checkpoint must carry besides the weights."""

    history: dict[str, list[float]]
    step: int = 0  # global training steps taken (every rank takes the same number)
    best_value: float | None = None
    best_epoch: int = 0
    best_checkpoint: str | None = None  # the folder name of the best epoch's checkpoint
    stale: int = 0
    total_rows: float = 0.0
    total_seconds: float = 0.0
    stopped_early: bool = False


class StateTrail:
    """This rank's loader and sampler state after each batch it pulled, so that a checkpoint
    records the state after the last *trained* batch, also when a train pipeline has pulled
    batches ahead (``TrainPipelineSparseDist`` keeps some in flight)."""

    def __init__(self, loader: Any, sampler: torch.Generator) -> None:
        self.loader = loader
        self.sampler = sampler
        self.states: deque[tuple[int, dict[str, Any], torch.Tensor]] = deque()
        self.pulled = 0

    def wrap(self, batches: Iterator[Batch | None]) -> Iterator[Batch | None]:
        self.states.clear()
        self.pulled = 0
        for batch in batches:
            self.pulled += 1
            self.states.append((self.pulled, self.loader.state_dict(), self.sampler.get_state()))
            yield batch

    def after(self, steps: int) -> tuple[dict[str, Any], torch.Tensor]:
        """The state after the ``steps``-th batch of this epoch (older ones are dropped)."""
        while self.states and self.states[0][0] < steps:
            self.states.popleft()
        if not self.states or self.states[0][0] != steps:
            raise RuntimeError(f"no loader state recorded after batch {steps}")
        _, loader_state, sampler_state = self.states[0]
        return loader_state, sampler_state


class Checkpointer:
    """Sharded checkpoints of one run (:mod:`recsys_kedro.training.checkpointing`)."""

    def __init__(
        self,
        policy: CheckpointPolicy,
        model: nn.Module,
        optimizer: Any,
        loader: Any,
        sampler: torch.Generator,
        ctx: DistContext,
        config: TrainConfig,
    ) -> None:
        self.policy = policy
        self.model = model
        self.optimizer = optimizer
        self.loader = loader
        self.sampler = sampler
        self.ctx = ctx
        self.batch_size = config.batch_size
        self.trail = StateTrail(loader, sampler)
        self.saved = 0
        self.restored_from: str | None = None

    def due(self, step: int) -> bool:
        every = self.policy.every_n_steps
        return every is not None and step % int(every) == 0

    def save(
        self,
        loop: LoopState,
        *,
        epoch: int,
        step_in_epoch: int,
        partial: tuple[float, int, float],
        loader_state: dict[str, Any],
        sampler_state: torch.Tensor,
        epoch_end: bool = False,
    ) -> None:
        """A checkpoint after ``loop.step`` (a collective). ``partial``: this rank's loss sum,
        rows and seconds of the epoch so far (zeros at an epoch's end)."""
        from recsys_kedro.training.checkpointing import (
            encode_tensor,
            prune,
            save_checkpoint,
            step_path,
        )

        local = {
            "loader": loader_state,
            "sampler": encode_tensor(sampler_state),
            "loss_sum": float(partial[0]),
            "rows": int(partial[1]),
            "seconds": float(partial[2]),
        }
        ranks: list[Any] = [None] * self.ctx.world_size
        torch.distributed.all_gather_object(ranks, local)
        state = {
            **asdict(loop),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "world_size": self.ctx.world_size,
            "batch_size": self.batch_size,
            "ranks": ranks,
        }
        path = step_path(self.policy.directory, loop.step, epoch_end=epoch_end)
        save_checkpoint(path, self.model, self.optimizer, state)
        self.saved += 1
        if self.ctx.is_main:
            protect = {self.path(loop.best_checkpoint)} if loop.best_checkpoint else set()
            prune(self.policy.directory, int(self.policy.keep_last), protect)

    def path(self, name: str) -> str:
        return f"{self.policy.directory.rstrip('/')}/{name}"

    def epoch_end_name(self, loop: LoopState) -> str:
        """The folder name (relative: the folder can move) of this step's epoch-end save."""
        from recsys_kedro.training.checkpointing import step_path

        return step_path(self.policy.directory, loop.step, epoch_end=True).rsplit("/", 1)[-1]

    def at_epoch_end(self, loop: LoopState, epoch: int) -> None:
        # The next epoch starts from its first row on every rank (lock-step ended this one).
        self.loader.end_epoch()
        self.save(
            loop,
            epoch=epoch + 1,
            step_in_epoch=0,
            partial=(0.0, 0, 0.0),
            loader_state=self.loader.state_dict(),
            sampler_state=self.sampler.get_state(),
            epoch_end=True,
        )

    def restore(self) -> tuple[LoopState, int, int, tuple[float, int, float]] | None:
        """Load the newest complete checkpoint, if any (a collective). Returns the loop's
        progress, the epoch to continue, the steps of it already taken and this rank's partial
        sums of it; the loader and sampler are set to continue exactly after that step."""
        from recsys_kedro.training.checkpointing import (
            decode_tensor,
            latest_complete,
            load_checkpoint,
            remove_partial,
        )

        directory = self.policy.directory

        def find() -> str | None:
            found = latest_complete(directory)
            for path in remove_partial(directory):  # left by a rank that died while saving
                logger.info("deleted the partial checkpoint %s", path)
            return found

        path = on_main(find, self.ctx)
        if path is None:
            return None
        state = load_checkpoint(path, self.model, self.optimizer)
        for key, mine in (("world_size", self.ctx.world_size), ("batch_size", self.batch_size)):
            if state[key] != mine:
                raise ValueError(
                    f"cannot resume from {path}: it was written with {key}={state[key]}, this "
                    f"run has {key}={mine}; use the same setting, or resume=false to start over"
                )
        # Each loader continues its own partition of the data: the state saved by the loader of
        # the same (Mosaic) rank, which differs from the process rank when ranks share
        # machines in cluster mode (see machine_local_ranks).
        mine = [s for s in state["ranks"] if s["loader"]["rank"] == self.loader.rank]
        local = mine[0] if mine else state["ranks"][self.ctx.rank]
        self.loader.load_state_dict(local["loader"])
        self.sampler.set_state(decode_tensor(local["sampler"]))
        loop = LoopState(**{f.name: state[f.name] for f in fields(LoopState)})
        if self.ctx.is_main:
            logger.info(
                "resuming from %s (epoch %d, %d step(s) into it)",
                path,
                state["epoch"],
                state["step_in_epoch"],
            )
        partial = (float(local["loss_sum"]), int(local["rows"]), float(local["seconds"]))
        self.restored_from = path
        return loop, int(state["epoch"]), int(state["step_in_epoch"]), partial

    def after_success(self) -> None:
        """The model is saved: the checkpoints have served their purpose (surviving a
        failure) and are removed, unless the policy keeps them. Rank 0 removes them."""
        if self.policy.keep_after_success or not self.ctx.is_main:
            return
        fs, root = fsspec.core.url_to_fs(self.policy.directory)
        if fs.exists(root):
            fs.rm(root, recursive=True)

    def best_snapshot(self, loop: LoopState) -> dict[str, Any] | None:
        """This rank's copy of the best epoch's weights after a resume (they are in the
        checkpoint taken at that epoch's end, kept by pruning). A collective."""
        from recsys_kedro.training.checkpointing import load_model_weights

        if loop.best_checkpoint is None or self.restored_from is None:
            return None
        best = self.path(loop.best_checkpoint)
        if best == self.restored_from:
            return snapshot_local_state(self.model)
        load_model_weights(best, self.model)
        snapshot = snapshot_local_state(self.model)
        load_model_weights(self.restored_from, self.model)
        return snapshot


def step_hook(
    loop: LoopState,
    checkpointer: Checkpointer | None,
    epoch: int,
    done_before: int,
    seconds_before: float,
    start: float,
) -> StepHook:
    """Counts global steps and writes the every-N-steps checkpoints of one epoch.
    ``done_before``/``seconds_before``: the epoch's steps and seconds before a resume."""

    def on_step(steps: int, loss_sum: torch.Tensor, rows: int) -> None:
        loop.step += 1
        if checkpointer is None or not checkpointer.due(loop.step):
            return
        loader_state, sampler_state = checkpointer.trail.after(steps)
        checkpointer.save(
            loop,
            epoch=epoch,
            step_in_epoch=done_before + steps,
            partial=(float(loss_sum), rows, seconds_before + time.perf_counter() - start),
            loader_state=loader_state,
            sampler_state=sampler_state,
        )

    return on_step
