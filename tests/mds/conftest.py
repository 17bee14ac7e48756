"""Every MDS test starts without Mosaic shared memory left by an earlier one."""

from __future__ import annotations

import gc

import pytest
from streaming.base.util import clean_stale_shared_memory


@pytest.fixture(autouse=True)
def _clean_shared_memory():
    gc.collect()  # drop StreamingDatasets of earlier tests (they hold shared memory)
    clean_stale_shared_memory()
    yield
    gc.collect()
