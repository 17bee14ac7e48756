"""Mosaic streaming's shared memory, safe for several runs on one machine.

Mosaic names a dataset's shared memory ``<prefix>_<name>`` (``/dev/shm/000000_locals``, ...)
and takes the lowest prefix that is free when the dataset is made. Two runs making datasets
at the same moment can both see prefix 0 free: one fails (``FileExistsError:
'/000000_locals'``), or its ranks disagree on the prefix. Mosaic's remedy for a killed run's
leftovers, ``clean_stale_shared_memory()``, unlinks every prefix this user can open, a live
run's included, so it cannot be called while another run may be going.

Here, instead:

* a machine's ranks make their datasets while its local leader holds a file lock that every
  run on the machine takes (:func:`claiming_prefixes`), so two runs' claims never interleave
  and each run gets prefixes of its own;
* the leader records the prefixes its run claimed, with its process id, in a registry in the
  machine's temp folder (Mosaic's own atexit hook unlinks them when the process ends, and the
  entry is removed then too);
* before claiming, the leader unlinks the prefixes of registry entries whose process is gone
  (killed, so no atexit hook ran), and nothing else.

With several machines (cluster mode), each machine's leader takes its own machine's lock. The
leaders take them together or not at all (try, agree, back off), because Mosaic's prefix
claim has a barrier over all ranks inside it: two runs that each held one machine's lock and
waited for the other's would wait for ever.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import random
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

from streaming.base.constant import BARRIER_FILELOCK, CACHE_FILELOCK, SHM_TO_CLEAN

logger = logging.getLogger(__name__)

REGISTRY_NAME = "recsys-kedro-mosaic"
#: Mosaic's shared-memory names and file locks of one prefix, from Mosaic itself.
_SHM_NAMES = tuple(SHM_TO_CLEAN)
_FILELOCK_NAMES = (BARRIER_FILELOCK, CACHE_FILELOCK)


def registry_dir() -> Path:
    """This machine's registry of claimed Mosaic prefixes (in the temp folder, like Mosaic's
    own file locks)."""
    return Path(tempfile.gettempdir()) / REGISTRY_NAME


def _shm_names(prefix: int) -> list[str]:
    return [f"{prefix:06}_{name}" for name in _SHM_NAMES]


def _filelock_paths(prefix: int) -> list[Path]:
    """Mosaic's file locks of one prefix, in the temp folder (where Mosaic puts them)."""
    temp = Path(tempfile.gettempdir())
    return [temp / f"{prefix:06}_{name}" for name in _FILELOCK_NAMES]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink_prefix(prefix: int) -> int:
    """Unlink one prefix's shared memory and file locks; the number of segments removed."""
    removed = 0
    for name in _shm_names(prefix):
        try:
            segment = shared_memory.SharedMemory(name=name, create=False)
        except (FileNotFoundError, PermissionError):
            continue
        segment.close()
        segment.unlink()
        removed += 1
    for path in _filelock_paths(prefix):
        path.unlink(missing_ok=True)
    return removed


def clean_dead_runs(registry: Path | None = None) -> list[int]:
    """Unlink the prefixes of registered runs whose process is gone; the prefixes unlinked.

    A live run's prefixes are never touched, nor prefixes no registered run claimed (another
    program's datasets). Call it with the machine's lock held (:func:`claiming_prefixes`
    does), so an entry is not read while it is being written.
    """
    registry = registry or registry_dir()
    cleaned: list[int] = []
    for entry in sorted(registry.glob("*.json")):
        try:
            record = json.loads(entry.read_text())
            pid, prefixes = int(record["pid"]), [int(p) for p in record["prefixes"]]
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("ignoring an unreadable Mosaic prefix registry entry %s", entry)
            continue
        if _alive(pid):
            continue
        segments = sum(_unlink_prefix(prefix) for prefix in prefixes)
        with contextlib.suppress(PermissionError):  # another user's entry: theirs to remove
            entry.unlink(missing_ok=True)
        cleaned.extend(prefixes)
        if segments:
            logger.info(
                "removed %d shared-memory segment(s) of Mosaic prefix(es) %s, left by a run "
                "(process %d) that is gone",
                segments, prefixes, pid,
            )  # fmt: skip
    return cleaned


@dataclass
class PrefixClaim:
    """What :func:`claiming_prefixes` yields: record the datasets made under the lock."""

    leader: bool
    registry: Path
    entry: Path | None = None
    prefixes: list[int] = field(default_factory=list)

    def record(self, datasets: Iterable[Any]) -> list[int]:
        """Register the Mosaic prefixes of ``datasets`` (``StreamingDataset``) for this run,
        removed again when this process exits (its prefixes are unlinked by Mosaic then).

        The prefixes' file locks are made now, while the machine's lock is held. Mosaic makes
        them only when a dataset is first iterated, and its search for a free prefix skips a
        prefix that has them: without them, a dataset dropped before it was iterated would
        free its prefix at any moment, and the ranks of a run searching just then (each rank
        searches on its own) could each find another one ("prefix ... was not registered by
        local leader").
        """
        self.prefixes = sorted({int(ds._shm_prefix_int) for ds in datasets})
        if not self.leader or not self.prefixes:
            return self.prefixes
        for prefix in self.prefixes:
            for path in _filelock_paths(prefix):
                path.touch(exist_ok=True)
        self.entry = self.registry / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "prefixes": self.prefixes,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        partial = self.entry.with_suffix(".tmp")
        partial.write_text(json.dumps(record))
        partial.replace(self.entry)
        atexit.register(self.entry.unlink, missing_ok=True)
        return self.prefixes


def _try_lock(path: Path) -> int | None:
    # Read-only is enough for flock, and lets every user of the machine open the one lock.
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    with contextlib.suppress(PermissionError):  # only its creator may (and need) widen it
        os.fchmod(fd, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


#: How many claims this process is inside: a claim made inside another one (a dataset made by
#: :func:`recsys_kedro.mds.make_streaming_dataset` while the trainer claims its loaders') joins
#: the outer claim, whose lock is already held (a second ``flock`` would wait for ever).
_held = {"claims": 0}


def in_claim() -> bool:
    """Whether this process is inside :func:`claiming_prefixes` now."""
    return _held["claims"] > 0


@contextlib.contextmanager
def claiming_prefixes(
    leader: bool,
    all_agree: Callable[[bool], bool] = lambda ok: ok,
    *,
    registry: Path | None = None,
    timeout_s: float = 600.0,
) -> Iterator[PrefixClaim]:
    """Hold this machine's Mosaic lock (the local leader takes it) while the body makes the
    run's streaming datasets; a collective when ``all_agree`` is one. Inside another claim of
    this process it only joins that one (the outer claim records the datasets).

    Args:
        leader: Whether this process is its machine's local leader (Mosaic's local rank 0).
        all_agree: ``True`` on every rank iff it is ``True`` on every rank (an all-reduce of
            the leaders' lock results); the default suits a single process.
        registry: The registry folder (default :func:`registry_dir`).
        timeout_s: Give up waiting for other runs' claims after this long.
    """
    registry = registry or registry_dir()
    if _held["claims"]:
        yield PrefixClaim(leader=False, registry=registry)
        return
    if leader:
        registry.mkdir(parents=True, exist_ok=True)
        # Everyone may run on this machine: the shared folder and lock are open to all.
        with contextlib.suppress(PermissionError):
            os.chmod(registry, 0o1777)
    lock_path = registry / ".lock"
    deadline = time.monotonic() + timeout_s
    waited = False
    while True:
        fd = _try_lock(lock_path) if leader else None
        if all_agree(fd is not None or not leader):
            break
        if fd is not None:
            os.close(fd)  # another machine's leader is waiting: let go, try again together
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"waited {timeout_s:.0f} s for {lock_path}, held by another run making its "
                "Mosaic streaming datasets on this machine; if no such run is going, delete "
                "the file"
            )
        if not waited:
            logger.info("waiting for another run on this machine to make its datasets")
            waited = True
        time.sleep(random.uniform(0.05, 0.5))
    _held["claims"] += 1
    try:
        if leader:
            clean_dead_runs(registry)
        yield PrefixClaim(leader=leader, registry=registry)
        all_agree(True)  # every rank has made its datasets before the lock is let go
    finally:
        _held["claims"] -= 1
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


def process_group_agrees(ok: bool) -> bool:
    """``all_agree`` over the default process group (every rank calls it); ``ok`` itself in a
    single process."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ok
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([0.0 if ok else 1.0], device=device)
    dist.all_reduce(flag)
    return float(flag.item()) == 0.0


@contextlib.contextmanager
def claimed_datasets() -> Iterator[PrefixClaim]:
    """:func:`claiming_prefixes` for code that makes streaming datasets outside the trainer:
    this process alone, or every rank of the default process group (a collective then, led by
    each machine's local rank 0)."""
    with claiming_prefixes(os.environ.get("LOCAL_RANK", "0") == "0", process_group_agrees) as claim:
        yield claim
