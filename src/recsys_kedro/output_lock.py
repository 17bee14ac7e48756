"""One writer per output: a run that would write what another live run is writing stops at once.

Two ``kedro run`` that write the same datasets under the same data root (the same pipeline
started twice, or ``recommend`` beside the ``two_tower`` run whose stages it shares) would
interleave their files: shards of one export beside the other's index, a model from one run
with the other's metrics. Each run takes an exclusive lock per output dataset before its first
node; a second run that needs one of them fails before it starts, naming the run that holds
it. Runs with no output in common (``dlrm`` beside ``two_tower``, or any two runs with
different data roots) go on side by side.

The locks are ``flock`` locks on files in this machine's temp folder, keyed by the data root
and the dataset name: the operating system releases them when a process ends however it ends,
so a killed run leaves nothing to clean up. They see the runs of one machine (one driver);
runs on other machines writing the same shared folder are not seen (a Databricks job allows
one run at a time, ``max_concurrent_runs: 1`` in the bundle).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

LOCKS_NAME = "recsys-kedro-outputs"


class OutputsInUseError(RuntimeError):
    """Another live run holds the lock of an output this run would write."""


def _lock_folder(data_root: str) -> Path:
    key = hashlib.sha256(data_root.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / LOCKS_NAME / key


def _holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


class OutputLocks:
    """Exclusive locks on a run's outputs under one data root (see the module docstring).

    Example::

        locks = OutputLocks("/path/to/data")
        locks.acquire(["two_tower.model", "two_tower.metrics"], run="two_tower")
        ...  # the run
        locks.release()
    """

    def __init__(self, data_root: str) -> None:
        self.data_root = data_root
        self._held: list[int] = []

    def acquire(self, outputs: Iterable[str], *, run: str) -> None:
        """Lock every output, or none: raise :class:`OutputsInUseError` naming the holder."""
        folder = _lock_folder(self.data_root)
        folder.mkdir(parents=True, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "run": run,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for name in sorted(set(outputs)):
            file = folder / f"{name.replace(os.sep, '_')}.lock"
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = _holder(fd)
                os.close(fd)
                self.release()
                raise OutputsInUseError(
                    f"another run is writing '{name}' under the data root {self.data_root}: "
                    f"{other.get('run', 'a run')} (process {other.get('pid', '?')} on "
                    f"{other.get('host', '?')}, started {other.get('started', '?')}). Wait for "
                    "it to finish, or give this run its own data root (`data_root` in "
                    "conf/<env>/globals.yml)."
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            self._held.append(fd)

    def release(self) -> None:
        """Let go of every lock this object holds (closing a descriptor releases its lock)."""
        while self._held:
            os.close(self._held.pop())
