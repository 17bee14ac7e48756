"""Launch a pure training function on Spark with ``TorchDistributor``.

One function for every model of the project: local mode (processes on the driver) on a
laptop or a single node, cluster mode (one process per executor task) on a Spark cluster.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Generic, TypeVar

import fsspec
import torch

from recsys_kedro.training.storage import free_space

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
            leave_outcome(self.outcome_dir, f"rank{rank}.error", report)
            raise  # the rank's own exception, whatever became of its report
        leave_outcome(self.outcome_dir, f"rank{rank}.done", None)
        return result


def _fallback_dir(outcome_dir: str) -> str:
    """Where a rank leaves its outcome when ``outcome_dir`` cannot take it: the same folder
    name under this machine's temporary folder (the driver's, in local mode)."""
    name = outcome_dir.rstrip("/").rsplit("/", 1)[-1]
    return os.path.join(tempfile.gettempdir(), "recsys-kedro-outcomes", name)


def leave_outcome(outcome_dir: str, name: str, report: dict[str, Any] | None) -> None:
    """Write a rank's outcome file. If the outcome folder cannot take it (disk full, not
    writable), write it to :func:`_fallback_dir`, with what went wrong, and say so on stderr
    (the executor's log in cluster mode). Never raises: a rank's own error must not be
    replaced by the failure to report it."""
    text = "" if report is None else json.dumps(report)
    try:
        with fsspec.open(f"{outcome_dir}/{name}", "w") as f:
            f.write(text)
        return
    except OSError as exc:
        problem = f"{type(exc).__name__}: {exc} ({free_space(outcome_dir)})"
    fallback = _fallback_dir(outcome_dir)
    if report is not None:
        text = json.dumps({**report, "outcome_write_error": f"{outcome_dir}: {problem}"})
    try:
        os.makedirs(fallback, exist_ok=True)
        with open(os.path.join(fallback, name), "w") as f:
            f.write(text)
        where = f"left it in {fallback} instead"
    except OSError as exc:
        where = f"nor in {fallback} ({type(exc).__name__}: {exc})"
    print(
        f"recsys-kedro: could not write the rank outcome {outcome_dir}/{name}: {problem}; "
        f"{where}. The outcome: {text[-3000:] or 'returned'}",
        file=sys.stderr,
        flush=True,
    )


def _outcomes(outcome_dir: str, num_processes: int) -> tuple[list[dict[str, Any]], list[int]]:
    """The ranks' error reports (first raised first) and the ranks that left no outcome, in
    ``outcome_dir`` or, for a rank that could not write there, in its fallback folder."""
    fs, root = fsspec.core.url_to_fs(outcome_dir)
    fallback = _fallback_dir(outcome_dir)
    errors, silent = [], []
    for rank in range(num_processes):
        error, done = f"rank{rank}.error", f"rank{rank}.done"
        if fs.exists(f"{root}/{error}"):
            errors.append(json.loads(fs.cat_file(f"{root}/{error}")))
        elif os.path.exists(os.path.join(fallback, error)):
            with open(os.path.join(fallback, error)) as f:
                errors.append(json.load(f))
        elif not (fs.exists(f"{root}/{done}") or os.path.exists(os.path.join(fallback, done))):
            silent.append(rank)
    shutil.rmtree(fallback, ignore_errors=True)
    return sorted(errors, key=lambda e: e["time"]), silent


def _writable(folder: str) -> str | None:
    """``None`` if a file can be written in ``folder``; else what stops it, with the free
    space (why a rank may have left no outcome there)."""
    probe = f"{folder.rstrip('/')}/.probe-{uuid.uuid4().hex}"
    try:
        fs, path = fsspec.core.url_to_fs(probe)
        with fs.open(path, "w") as f:
            f.write("x")
        fs.rm(path)
    except OSError as exc:
        why = f"{type(exc).__name__}: {exc}; {free_space(folder)}"
        return f"the outcome folder {folder} cannot be written ({why})"
    return None


def _failure_message(
    errors: list[dict[str, Any]],
    silent: list[int],
    cause: str | None,
    outcome_problem: str | None = None,
) -> str:
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
        for report in errors:
            if "outcome_write_error" in report:
                lines.append(
                    f"(rank {report['rank']} could not report to {report['outcome_write_error']})"
                )
    if silent and outcome_problem:
        lines.append(
            f"rank(s) {silent} left no outcome, and {outcome_problem}: their errors are in "
            "the ranks' logs (stderr)"
        )
    elif silent:
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

    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    # No clean-up of Mosaic's shared memory here: its `clean_stale_shared_memory()` would also
    # unlink a live run's. The ranks claim prefixes of their own and remove only those of runs
    # that are gone (recsys_kedro.mds.shared_memory).
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
                problem = _writable(outcomes) if silent and outcomes else None
                raise RuntimeError(_failure_message(errors, silent, cause, problem)) from exc
            if outcomes is not None:
                errors, silent = _outcomes(outcomes, num_processes)
                if errors or silent:
                    problem = _writable(outcomes) if silent else None
                    raise RuntimeError(_failure_message(errors, silent, None, problem))
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
    try:
        fs.makedirs(root, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"cannot create the ranks' outcome folder {path}: {type(exc).__name__}: {exc} "
            f"({free_space(parent)})"
        ) from exc
    try:
        yield path
    finally:
        fs.rm(root, recursive=True)
