"""Every MDS test starts without Mosaic shared memory left by an earlier one."""

from __future__ import annotations

import gc

import pytest
from streaming.base.util import clean_stale_shared_memory


@pytest.fixture(scope="session")
def _long_lived_objects_frozen():
    """Move what is alive now (imported modules, the Spark session, ...) out of the garbage
    collector's view, once: every full collection below then only walks the objects the tests
    made since, instead of the whole heap (~0.7 s a collection in a full run)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _clean_shared_memory(_long_lived_objects_frozen):
    gc.collect()  # drop StreamingDatasets of earlier tests (they hold shared memory)
    clean_stale_shared_memory()


@pytest.fixture(scope="module", autouse=True)
def _collect_after_module():
    yield
    gc.collect()  # the module's last datasets go before the next module's tests start
