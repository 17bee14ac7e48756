"""Learning-from-Sets `item_ratings.csv` through ingestion and features by configuration only."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from .conftest import PROJECT_ROOT, make_project, run_project

pytestmark = pytest.mark.integration

FIXTURE = PROJECT_ROOT / "tests" / "fixtures" / "ratings" / "item_ratings.csv"

LOCAL_CATALOG = f"""
raw_ratings:
  type: recsys_kedro.datasets.ratings_dataset.RatingsDataset
  filepath: {FIXTURE}
  format: lfs_item_ratings
  rating_range: [0.5, 5.0]
"""


def test_lfs_item_ratings_by_a_catalog_override(tmp_path, spark):
    make_project(tmp_path, local_catalog=LOCAL_CATALOG)
    split = {"test_size": 1, "validation_size": 1, "min_train_interactions": 1}
    params = {"two_tower": {"features": {"split": split}}}
    run_project(
        tmp_path,
        params,
        pipeline_name="two_tower",
        to_nodes=["two_tower.features.summarise_splits"],
    )

    raw = pd.read_csv(FIXTURE)
    stats = json.loads((tmp_path / "data/08_reporting/two_tower_split_statistics.json").read_text())
    assert stats["n_users"] == raw["userId"].nunique()
    assert stats["n_items"] == raw["movieId"].nunique()
    total = sum(stats[s]["interactions"] for s in ("train", "validation", "test"))
    assert total == len(raw.drop_duplicates(["userId", "movieId"]))
    assert stats["test"]["interactions"] == raw["userId"].nunique()  # one latest rating per user
    index = pd.read_parquet(tmp_path / "data/03_primary/two_tower/user_index")
    assert set(index["user_id"]) == set(raw["userId"])  # hashed ids translate back
