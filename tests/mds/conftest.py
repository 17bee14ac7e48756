"""Every MDS test starts with the earlier tests' streaming datasets released.

No ``clean_stale_shared_memory()``: it would unlink the shared memory of every Mosaic run on
the machine, another test session's included. A released dataset's prefix is not reused (a
new one takes the next), and this process's segments are unlinked when it exits (Mosaic's
atexit hook)."""

from __future__ import annotations

import gc

import pytest


@pytest.fixture(scope="session")
def _long_lived_objects_frozen():
    """Move what is alive now (imported modules, the Spark session, ...) out of the garbage
    collector's view, once: every full collection below then only walks the objects the tests
    made since, instead of the whole heap (~0.7 s a collection in a full run)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _release_datasets(_long_lived_objects_frozen):
    gc.collect()  # drop StreamingDatasets of earlier tests (they hold shared memory)


@pytest.fixture(scope="module", autouse=True)
def _collect_after_module():
    yield
    gc.collect()  # the module's last datasets go before the next module's tests start
