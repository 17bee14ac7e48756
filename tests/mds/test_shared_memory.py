"""Mosaic prefixes per run: claims on one machine never interleave, and only the prefixes of
runs that are gone are removed (never a live run's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pytest

from recsys_kedro.mds.shared_memory import (
    _try_lock,
    claiming_prefixes,
    clean_dead_runs,
    in_claim,
    registry_dir,
)

#: A process that makes one streaming dataset under the registry's lock and prints when it
#: got the lock and which prefix it claimed.
CLAIM_IN_ANOTHER_PROCESS = """
import json, sys, time
from pathlib import Path
from streaming import StreamingDataset
from recsys_kedro.mds.shared_memory import claiming_prefixes
print("trying", flush=True)
with claiming_prefixes(True, registry=Path(sys.argv[1])) as claim:
    locked_at = time.time()
    ds = StreamingDataset(local=sys.argv[2], remote=None, batch_size=1)
    prefixes = claim.record([ds])
print(json.dumps({"locked_at": locked_at, "prefixes": prefixes}))
"""


def _mds(folder: Path) -> str:
    from streaming import MDSWriter

    with MDSWriter(out=str(folder), columns={"x": "int64"}) as writer:
        for i in range(8):
            writer.write({"x": np.int64(i)})
    return str(folder)


@pytest.fixture
def mds_folder(tmp_path) -> str:
    return _mds(tmp_path / "mds")


def test_two_runs_claim_their_prefixes_one_after_the_other(mds_folder):
    """On the machine's own registry and lock, which every run here takes (other test
    workers' claims included)."""
    from streaming import StreamingDataset

    registry = registry_dir()
    with claiming_prefixes(True) as claim:
        other = subprocess.Popen(
            [sys.executable, "-c", CLAIM_IN_ANOTHER_PROCESS, str(registry), mds_folder],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert other.stdout.readline().strip() == "trying"
        time.sleep(0.5)  # the other run is waiting for the lock
        dataset = StreamingDataset(local=mds_folder, remote=None, batch_size=1)
        mine = claim.record([dataset])
        released_at = time.time()
    out, _ = other.communicate(timeout=120)  # the rest of its output
    assert other.returncode == 0
    theirs = json.loads(out.strip().splitlines()[-1])
    assert theirs["locked_at"] >= released_at  # it tried before, and waited for this claim
    assert mine and theirs["prefixes"] and set(mine).isdisjoint(theirs["prefixes"])
    # Each claim left an entry naming its process; the other process removed its own at exit.
    entries = [json.loads(p.read_text()) for p in registry.glob("*.json")]
    assert {"pid": os.getpid(), "prefixes": mine} in [
        {"pid": e["pid"], "prefixes": e["prefixes"]} for e in entries
    ]
    assert all(e["pid"] != other.pid for e in entries)
    del dataset


def test_datasets_made_outside_the_trainer_are_claimed_and_a_nested_claim_joins(tmp_path):
    """make_streaming_dataset claims prefixes itself (a notebook or test beside a run), and
    inside another claim of this process joins it rather than waiting for its own lock."""
    from recsys_kedro.mds import make_streaming_dataset
    from recsys_kedro.mds.writer import MDSFolder

    folder = MDSFolder(
        remote=None, local=_mds(tmp_path / "mds"), num_samples=8, columns={"x": "int64"}
    )
    alone = make_streaming_dataset(folder, batch_size=1, shuffle=False, seed=0)
    entries = [json.loads(p.read_text()) for p in registry_dir().glob("*.json")]
    assert [alone._shm_prefix_int] in [e["prefixes"] for e in entries if e["pid"] == os.getpid()]
    # Its file locks exist before it is ever iterated: when it is dropped, its prefix stays
    # taken for other runs' searches (which skip a prefix with file locks) instead of freeing
    # up while their ranks each search.
    temp = Path(tempfile.gettempdir())
    assert all(
        (temp / f"{alone._shm_prefix_int:06}_{name}").exists()
        for name in ("barrier_filelock", "cache_filelock")
    )
    with claiming_prefixes(True, timeout_s=5) as outer:
        assert in_claim()
        inner = make_streaming_dataset(
            folder, batch_size=1, shuffle=False, seed=0, local_cache_dir=str(tmp_path / "c")
        )  # would time out if it took the lock again
        assert outer.record([inner]) == [inner._shm_prefix_int] != [alone._shm_prefix_int]
    assert not in_claim()
    del alone, inner


def _make_segments(prefix: int) -> list[shared_memory.SharedMemory]:
    names = [f"{prefix:06}_locals", f"{prefix:06}_barrier"]
    return [shared_memory.SharedMemory(name=n, create=True, size=8) for n in names]


def _exists(prefix: int) -> bool:
    try:
        segment = shared_memory.SharedMemory(name=f"{prefix:06}_locals", create=False)
    except FileNotFoundError:
        return False
    segment.close()
    return True


def test_only_the_prefixes_of_runs_that_are_gone_are_removed(tmp_path):
    registry = tmp_path / "registry"
    registry.mkdir()
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"]).pid
    os.waitpid(dead_pid, 0)  # reaped: no such process any more
    base = 900_000 + (os.getpid() % 1000) * 10  # far above the prefixes runs take
    dead, live, unregistered = base, base + 1, base + 2
    segments = {p: _make_segments(p) for p in (dead, live, unregistered)}
    filelock = Path(tempfile.gettempdir()) / f"{dead:06}_barrier_filelock"
    filelock.write_text("")
    (registry / "dead.json").write_text(json.dumps({"pid": dead_pid, "prefixes": [dead]}))
    (registry / "live.json").write_text(json.dumps({"pid": os.getpid(), "prefixes": [live]}))
    try:
        assert clean_dead_runs(registry) == [dead]
        assert not _exists(dead) and not filelock.exists()
        assert _exists(live) and _exists(unregistered)  # a live run's, and another program's
        assert sorted(p.name for p in registry.glob("*.json")) == ["live.json"]
    finally:
        for prefix, made in segments.items():
            for segment in made:
                segment.close()
                if prefix != dead:
                    segment.unlink()


def test_a_claim_that_cannot_get_the_lock_says_which_file_to_check(tmp_path):
    registry = tmp_path / "registry"
    registry.mkdir()
    fd = _try_lock(registry / ".lock")  # another run is making its datasets
    assert fd is not None
    try:
        with (
            pytest.raises(TimeoutError, match=r"\.lock.*delete the file"),
            claiming_prefixes(True, registry=registry, timeout_s=0.2),
        ):
            pass
    finally:
        os.close(fd)
    with claiming_prefixes(True, registry=registry, timeout_s=0.2) as claim:
        assert claim.leader  # free again once the other run let go
