"""Launch a pure training function on Spark with ``TorchDistributor``.

One function for every model of the project: local mode (processes on the driver) on a
laptop or a single node, cluster mode (one process per executor task) on a Spark cluster.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Generic, TypeVar

import fsspec
import torch

logger = logging.getLogger(__name__)
R = TypeVar("R")


def resolve_use_gpu(use_gpu: bool | None) -> bool:
    """``None`` means: use GPUs when this (driver) process sees CUDA."""
    return torch.cuda.is_available() if use_gpu is None else bool(use_gpu)


class _RankGuard(Generic[R]):
    """Runs ``fn`` on a rank and leaves its outcome in ``outcome_dir``: ``rank<N>.done`` when
    it returned, ``rank<N>.error`` (JSON: the exception and its traceback) when it raised.

    TorchDistributor reports only an exit code, and pyspark 4.3's local mode runs torchrun
    through a wrapper that exits 0 whatever the ranks did and returns whichever output file
    exists: a rank that crashed after rank 0 had finished would go unnoticed. The outcome files
    let :func:`launch` check that every rank returned and quote the one that failed. In cluster
    mode ``outcome_dir`` must be storage the executors and the driver share (a volume, DBFS,
    an object store, or a common path on a one-machine cluster).
    """

    def __init__(self, fn: Callable[..., R], outcome_dir: str) -> None:
        self.fn = fn
        self.outcome_dir = outcome_dir

    def __call__(self, *args: Any) -> R:
        rank = os.environ.get("RANK", "0")
        try:
            result = self.fn(*args)
        except BaseException as exc:
            report = {
                "rank": int(rank),
                "time": time.time(),
                "host": socket.gethostname(),
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
            with fsspec.open(f"{self.outcome_dir}/rank{rank}.error", "w") as f:
                json.dump(report, f)
            raise
        with fsspec.open(f"{self.outcome_dir}/rank{rank}.done", "w") as f:
            f.write("")
        return result


def _outcomes(outcome_dir: str, num_processes: int) -> tuple[list[dict[str, Any]], list[int]]:
    """The ranks' error reports (first raised first) and the ranks that left no outcome."""
    fs, root = fsspec.core.url_to_fs(outcome_dir)
    errors, silent = [], []
    for rank in range(num_processes):
        if fs.exists(f"{root}/rank{rank}.error"):
            with fs.open(f"{root}/rank{rank}.error") as f:
                errors.append(json.load(f))
        elif not fs.exists(f"{root}/rank{rank}.done"):
            silent.append(rank)
    return sorted(errors, key=lambda e: e["time"]), silent


def _failure_message(errors: list[dict[str, Any]], silent: list[int], cause: str | None) -> str:
    """Which rank failed and how: the first exception raised (the others are usually its
    peers failing in a collective once it was gone), with the end of its traceback."""
    lines = ["distributed training failed:"]
    if errors:
        first = errors[0]
        lines.append(f"rank {first['rank']} ({first['host']}) raised {first['error']}")
        tail = first["traceback"].strip().splitlines()[-12:]
        lines.append("  " + "\n  ".join(tail))
        for other in errors[1:]:
            lines.append(f"then rank {other['rank']} raised {other['error'][:300]}")
    if silent:
        lines.append(
            f"rank(s) {silent} stopped without a result or an exception: killed (e.g. out of "
            "memory, `kill -9`, a lost executor) or stopped by the launcher after another rank "
            "failed"
        )
    if cause and not errors:
        lines.append(f"the launcher reported {cause}")
    lines.append("Nothing was written to the model outputs.")
    return "\n".join(lines)


def launch(
    train_fn: Callable[..., R],
    *args: Any,
    num_processes: int,
    local_mode: bool = True,
    use_gpu: bool = False,
    outcome_dir: str | None = None,
) -> R:
    """Run ``train_fn(*args)`` on ``num_processes`` ranks and return rank 0's result.

    The training function must return the same value on every rank: TorchDistributor
    hands back whichever rank's value was written last, not necessarily rank 0's.

    If a rank raises or dies, the error names it and quotes its exception. Each rank leaves
    its outcome in a fresh folder under ``outcome_dir`` (removed afterwards), which in cluster
    mode must be storage the executors share with the driver; ``None``: a temporary folder on
    the driver, which only local-mode ranks can reach (cluster mode then reports the
    launcher's error alone).
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
    with ExitStack() as stack:
        parent = outcome_dir
        if parent is None and local_mode:  # the ranks run here: a driver folder will do
            parent = stack.enter_context(tempfile.TemporaryDirectory(prefix="recsys-kedro-ranks-"))
        with _outcome_folder(parent) as outcomes:
            fn = train_fn if outcomes is None else _RankGuard(train_fn, outcomes)
            try:
                result = distributor.run(fn, *args)
            except Exception as exc:  # TorchDistributor reports an exit code at best
                errors, silent = _outcomes(outcomes, num_processes) if outcomes else ([], [])
                cause = f"{type(exc).__name__}: {exc}"
                raise RuntimeError(_failure_message(errors, silent, cause)) from exc
            if outcomes is not None:
                errors, silent = _outcomes(outcomes, num_processes)
                if errors or silent:
                    raise RuntimeError(_failure_message(errors, silent, None))
    logger.info("training finished in %.1f s", time.perf_counter() - start)
    return result


@contextmanager
def _outcome_folder(parent: str | None) -> Iterator[str | None]:
    """A fresh folder for the ranks' outcome files under ``parent``, removed afterwards
    (``None``: no folder, no outcome files)."""
    if parent is None:
        yield None
        return
    path = f"{parent.rstrip('/')}/ranks-{uuid.uuid4().hex}"
    fs, root = fsspec.core.url_to_fs(path)
    fs.makedirs(root, exist_ok=True)
    try:
        yield path
    finally:
        fs.rm(root, recursive=True)
