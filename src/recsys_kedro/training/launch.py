"""Launch a pure training function on Spark with ``TorchDistributor``.

One function for every model of the project: local mode (processes on the driver) on a
laptop or a single node, cluster mode (one process per executor task) on a Spark cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

logger = logging.getLogger(__name__)
R = TypeVar("R")


def resolve_use_gpu(use_gpu: bool | None) -> bool:
    """``None`` means: use GPUs when this (driver) process sees CUDA."""
    return torch.cuda.is_available() if use_gpu is None else bool(use_gpu)


def launch(
    train_fn: Callable[..., R],
    *args: Any,
    num_processes: int,
    local_mode: bool = True,
    use_gpu: bool = False,
) -> R:
    """Run ``train_fn(*args)`` on ``num_processes`` ranks and return rank 0's result.

    The training function must return the same value on every rank: TorchDistributor
    hands back whichever rank's value was written last, not necessarily rank 0's.
    """
    from pyspark.ml.torch.distributor import TorchDistributor
    from streaming.base.util import clean_stale_shared_memory

    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    # Shared memory left by a killed run would collide with the new ranks' datasets. Done
    # here, in the driver, because inside the ranks it is a collective.
    clean_stale_shared_memory()
    start = time.perf_counter()
    logger.info(
        "launching %s on %d process(es) (%s mode, %s)",
        getattr(train_fn, "__qualname__", train_fn),
        num_processes,
        "local" if local_mode else "cluster",
        "GPU" if use_gpu else "CPU",
    )
    distributor = TorchDistributor(
        num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu
    )
    try:
        result = distributor.run(train_fn, *args)
    except Exception as exc:  # a rank crashed: TorchDistributor reports the exit code only
        raise RuntimeError(
            f"distributed training failed ({type(exc).__name__}: {exc}). One rank crashed and "
            "the others were stopped; its traceback is in the log above (look for the first "
            "'Traceback'). Nothing was written to the model outputs; fix the cause and re-run "
            "from the training stage (`kedro run --pipeline=two_tower "
            "--from-nodes=training.train_two_tower`)."
        ) from exc
    logger.info("training finished in %.1f s", time.perf_counter() - start)
    return result
