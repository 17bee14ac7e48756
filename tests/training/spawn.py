"""Run a training function on N local gloo processes without Spark (what TorchDistributor does),
each a fresh process forked from a server that imported the stack once.

Each child gets the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), calls ``fn(config)`` and pickles its return value to a file.
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(rank: int, world_size: int, port: int, fn: Callable, config: Any, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    result = fn(config)
    with open(Path(out_dir) / f"rank{rank}.pkl", "wb") as f:
        pickle.dump(result, f)


#: Imported once by the fork server; every rank is a fresh process forked from it, so a
#: launch does not pay for importing torch, TorchRec and Mosaic again (about 5 s a launch on
#: two cores). Nothing here starts a thread or touches a device, which makes the fork safe.
PRELOAD = ["torch", "torchrec", "streaming", "recsys_kedro.training.trainer", __name__]


def run_on_ranks(fn: Callable, config: Any, world_size: int, out_dir: Path) -> list[Any]:
    """Return every rank's result, in rank order; a crashed rank raises ProcessRaisedException."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mp.set_forkserver_preload(PRELOAD)
    mp.start_processes(
        _child,
        args=(world_size, _free_port(), fn, config, str(out_dir)),
        nprocs=world_size,
        join=True,
        start_method="forkserver",
    )
    results = []
    for rank in range(world_size):
        with open(out_dir / f"rank{rank}.pkl", "rb") as f:
            results.append(pickle.load(f))
    return results


def fit_on_rank(args: tuple) -> Any:
    """``fit(spec, config)`` on one rank: a module-level callable, so the 'spawn' start method
    can pickle it by name. Use ``run_on_ranks(fit_on_rank, (spec, config), ...)``."""
    from recsys_kedro.training.trainer import fit

    spec, config = args
    return fit(spec, config)
