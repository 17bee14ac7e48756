"""Launch a pure training function on Spark with ``TorchDistributor``.

One function for every model of the project: local mode (processes on the driver) on a
laptop or a single node, cluster mode (one process per executor task) on a Spark cluster.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

logger = logging.getLogger(__name__)
R = TypeVar("R")


def resolve_use_gpu(use_gpu: bool | None) -> bool:
    """``None`` means: use GPUs when this (driver) process sees CUDA."""
    return torch.cuda.is_available() if use_gpu is None else bool(use_gpu)


class _MarkDone(Generic[R]):
    """Runs ``fn`` on a rank, then leaves ``rank<N>.done`` in ``marker_dir``.

    pyspark 4.3's local-mode TorchDistributor runs torchrun through a wrapper that exits 0
    whatever the ranks did, and returns whichever output file exists: a rank that crashed
    after rank 0 had finished would go unnoticed. The markers let :func:`launch` check that
    every rank returned.
    """

    def __init__(self, fn: Callable[..., R], marker_dir: str) -> None:
        self.fn = fn
        self.marker_dir = marker_dir

    def __call__(self, *args: Any) -> R:
        result = self.fn(*args)
        Path(self.marker_dir, f"rank{os.environ.get('RANK', '0')}.done").touch()
        return result


def _crash_message(detail: str) -> str:
    return (
        f"distributed training failed: {detail}. One rank crashed and the others were "
        "stopped; its traceback is in the log above (look for the first 'Traceback'). Nothing "
        "was written to the model outputs."
    )


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
    with tempfile.TemporaryDirectory(prefix="recsys-kedro-ranks-") as markers:
        # Cluster-mode ranks run on executors and cannot see the driver's disk, so the check
        # is local-mode only (a marker folder on shared storage is left to the scale-out work).
        fn = _MarkDone(train_fn, markers) if local_mode else train_fn
        try:
            result = distributor.run(fn, *args)
        except Exception as exc:  # TorchDistributor reports the exit code only
            raise RuntimeError(_crash_message(f"{type(exc).__name__}: {exc}")) from exc
        if local_mode:
            missing = [
                r for r in range(num_processes) if not Path(markers, f"rank{r}.done").exists()
            ]
            if missing:
                raise RuntimeError(_crash_message(f"rank(s) {missing} did not return"))
    logger.info("training finished in %.1f s", time.perf_counter() - start)
    return result
