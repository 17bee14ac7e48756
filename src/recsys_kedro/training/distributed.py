"""Process-group plumbing shared by every distributed training function.

These helpers run *inside* the ranks launched by ``TorchDistributor`` (or by the tests'
process spawner): they read the standard ``torchrun`` environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``).
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import socket
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this rank runs."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(use_gpu: bool, timeout_s: float | None = None) -> DistContext:
    """Join the process group: nccl on CUDA, gloo on CPU.

    ``timeout_s``: how long a collective may wait for the other ranks before it fails (a rank
    that hangs, or that died without its peers' connections noticing); ``None``: PyTorch's
    default (10 minutes for gloo and nccl).

    ``use_gpu=True`` without a visible CUDA device is an error (it would silently train on
    CPU); ``False`` forces CPU even where CUDA exists.
    """
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if use_gpu:
        if not torch.cuda.is_available():
            raise RuntimeError(
                "use_gpu is true but this process sees no CUDA device: set "
                "use_gpu=False (or None to detect)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
        # Ranks share the machine's cores; oversubscription makes CPU training crawl.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world_size)))
    if not dist.is_initialized():
        timeout = None if timeout_s is None else datetime.timedelta(seconds=float(timeout_s))
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=timeout)
    return DistContext(rank, world_size, local_rank, local_world_size, device, backend)


@contextmanager
def machine_local_ranks(ctx: DistContext) -> Iterator[None]:
    """Make the torchrun environment tell which ranks share this machine, while Mosaic
    streaming datasets are created (they read it once, when made). A collective.

    TorchDistributor's cluster mode starts every rank as its own torchrun node
    (``LOCAL_WORLD_SIZE=1``), also when several Spark tasks run on one machine. Mosaic then
    makes each of them a "local leader", and they claim the same shared-memory names at once
    (``FileExistsError: '/000000_locals'``). Here the ranks compare host names; if the
    launcher's view is wrong, Mosaic is shown the true one: ``LOCAL_WORLD_SIZE`` = ranks per
    machine, and ``RANK`` / ``LOCAL_RANK`` renumbered so that each machine's ranks are
    consecutive (Mosaic assumes it). Every rank still reads a distinct partition; the
    environment is restored afterwards.
    """
    hosts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(hosts, socket.gethostname())
    mine = [r for r in range(ctx.world_size) if hosts[r] == hosts[ctx.rank]]
    if len(mine) == ctx.local_world_size:
        yield  # the launcher's view is right (local mode, torchrun, one rank per machine)
        return
    per_machine = Counter(hosts)
    if len(set(per_machine.values())) != 1:
        raise RuntimeError(
            f"the training ranks are spread unevenly over machines ({dict(per_machine)}); "
            "Mosaic streaming needs the same number of ranks on every machine: give every "
            "worker the same number of task slots (spark.executor.cores / spark.task.cpus, or "
            "GPUs with spark.task.resource.gpu.amount)"
        )
    order = sorted(range(ctx.world_size), key=lambda r: (hosts[r], r))
    view = {
        "RANK": str(order.index(ctx.rank)),
        "WORLD_SIZE": str(ctx.world_size),
        "LOCAL_RANK": str(mine.index(ctx.rank)),
        "LOCAL_WORLD_SIZE": str(len(mine)),
    }
    saved = {key: os.environ.get(key) for key in view}
    os.environ.update(view)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few scalars over all ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def all_gather_arrays(array: np.ndarray) -> np.ndarray:
    """Concatenate a (small) 1-D array from every rank, in rank order, on every rank."""
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, array)
    return np.concatenate(parts) if parts else array


def broadcast_from_main(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (TorchDistributor returns whichever rank ended last)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_full_state_dict(module: nn.Module, ctx: DistContext) -> dict[str, torch.Tensor] | None:
    """The whole, unsharded state dict of a ``DistributedModelParallel`` module on rank 0.

    Every rank must call this (gathering a sharded table is a collective); ranks other than
    0 get ``None``. Sharded tables (``ShardedTensor``) are gathered into full CPU tensors;
    dense parameters are already replicated.
    """
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    full: dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        if isinstance(value, ShardedTensor):
            out = (
                torch.empty(value.size(), dtype=value.dtype, device=ctx.device)
                if ctx.is_main
                else None
            )
            value.gather(dst=0, out=out)
            if ctx.is_main:
                full[key] = out.cpu()
        elif ctx.is_main:
            full[key] = value.detach().cpu()
    return full if ctx.is_main else None


def on_main(fn, ctx: DistContext):
    """``fn()`` on rank 0, its result broadcast to every rank. If it raises, every rank
    raises (rank 0 the original error), so no rank is left waiting in a collective."""
    outcome: tuple[bool, Any] | None = None
    error: BaseException | None = None
    if ctx.is_main:
        try:
            outcome = (True, fn())
        except Exception as exc:  # re-raised below, after the other ranks are told
            error = exc
            outcome = (False, f"{type(exc).__name__}: {exc}")
    ok, value = broadcast_from_main(outcome)
    if error is not None:
        raise error
    if not ok:
        raise RuntimeError(f"rank 0 failed: {value}")
    return value


def destroy_distributed(wait_for_peers: bool = True) -> None:
    """Leave the process group; with ``wait_for_peers``, after every rank got here (a
    barrier: no rank tears down while another still needs it). On an error path pass
    ``False``."""
    if dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()


def lockstep(batches: Iterable[T], ctx: DistContext, *, until: str) -> Iterator[T | None]:
    """Iterate a rank's batches in step with the other ranks.

    Sharded embeddings make every forward/backward a collective, so all ranks must run the
    same number of steps, but a rank's share of a split need not split into as many batches
    as another's. Each step all ranks agree (one tiny all-reduce) on who still has a batch:

    * ``until="any_done"`` (training): stop as soon as one rank runs out; the others' last
      few rows of the epoch are skipped (they are reshuffled into the next epoch).
    * ``until="all_done"`` (evaluation): go on until every rank is out; a rank that is out
      gets ``None`` and must run a dummy step whose outputs it discards, so no row is lost.
    """
    if until not in ("any_done", "all_done"):
        raise ValueError(f"until must be 'any_done' or 'all_done', got {until!r}")
    op = dist.ReduceOp.MIN if until == "any_done" else dist.ReduceOp.MAX
    iterator = iter(batches)
    while True:
        batch = next(iterator, None)
        flag = torch.tensor([0 if batch is None else 1], dtype=torch.int32, device=ctx.device)
        dist.all_reduce(flag, op=op)
        if int(flag.item()) == 0:
            return
        yield batch
