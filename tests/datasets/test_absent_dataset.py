"""AbsentDataset: an input a user does not have loads as None; nothing is saved to it."""

from __future__ import annotations

import pytest
from kedro.io import DataCatalog, DatasetError

from recsys_kedro.datasets.absent_dataset import AbsentDataset


def test_it_loads_none_from_the_catalog_and_refuses_to_save():
    catalog = DataCatalog.from_config(
        {"raw_users": {"type": "recsys_kedro.datasets.absent_dataset.AbsentDataset"}}
    )
    assert catalog.load("raw_users") is None
    assert catalog.exists("raw_users")
    assert AbsentDataset(metadata={"kedro-viz": {}}).load() is None
    with pytest.raises(DatasetError, match="nothing can be saved"):
        catalog.save("raw_users", [1])
