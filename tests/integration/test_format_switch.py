"""Learning-from-Sets `item_ratings.csv` through ingestion and features by configuration only."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from .conftest import PROJECT_ROOT, make_project, run_project

pytestmark = pytest.mark.integration

FIXTURE = PROJECT_ROOT / "tests" / "fixtures" / "ratings" / "item_ratings.csv"

LOCAL_CATALOG = f"""
raw_interactions:
  type: recsys_kedro.datasets.interactions_dataset.InteractionsDataset
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


EVENTS_CATALOG = """
raw_interactions:
  type: recsys_kedro.datasets.interactions_dataset.InteractionsDataset
  filepath: {folder}/*.csv
  format: csv
  columns: {{user_id: visitor_id, item_id: sku, event: event_type, timestamp: ts}}
  timestamp_unit: ms
"""
EVENTS_PARAMETERS = """
two_tower:
  ingestion:
    label:
      rule: events
      events: {purchase: {label: 1, weight: 2.0}, cart: 1, remove: 0, view: drop}
  features:
    split: {test_size: 1, validation_size: 1, min_train_interactions: 1}
"""


def _event_log(folder, seed=0):
    """Two days of a shop's events, one CSV file each (string ids, millisecond times)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = 400
    log = pd.DataFrame(
        {
            "visitor_id": [f"v-{u:03d}" for u in rng.integers(0, 30, n)],
            "sku": [f"SKU{i:04d}" for i in rng.integers(0, 40, n)],
            "event_type": rng.choice(["view", "view", "cart", "purchase", "remove"], n),
            "ts": 1_709_294_400_000 + rng.integers(0, 2 * 86_400_000, n),
        }
    )
    folder.mkdir()
    day = log["ts"] < 1_709_294_400_000 + 86_400_000
    log[day].to_csv(folder / "day-1.csv", index=False)
    log[~day].to_csv(folder / "day-2.csv", index=False)
    return log


def test_an_event_log_by_catalog_and_parameter_overrides(tmp_path, spark):
    log = _event_log(tmp_path / "events")
    make_project(tmp_path, local_catalog=EVENTS_CATALOG.format(folder=tmp_path / "events"))
    (tmp_path / "conf/local/parameters_two_tower.yml").write_text(EVENTS_PARAMETERS)
    run_project(
        tmp_path, {}, pipeline_name="two_tower", to_nodes=["two_tower.features.summarise_splits"]
    )

    # What the rule means, computed in pandas: views dropped, a pair's strongest event kept.
    strength = log["event_type"].map({"purchase": 1, "cart": 1, "remove": 0})
    weight = log["event_type"].map({"purchase": 2.0}).fillna(1.0)
    kept = log.assign(label=strength, weight=weight).dropna(subset=["label"])
    pairs = kept.sort_values(["label", "weight", "ts"]).groupby(["visitor_id", "sku"]).tail(1)
    stats = json.loads((tmp_path / "data/08_reporting/two_tower_split_statistics.json").read_text())
    total = sum(stats[s]["interactions"] for s in ("train", "validation", "test"))
    assert total == len(pairs)
    positives = sum(
        stats[s]["interactions"] * stats[s]["positive_rate"]
        for s in stats
        if s in ("train", "validation", "test")
    )
    assert round(positives) == int(pairs["label"].sum())
    clean = pd.read_parquet(tmp_path / "data/02_intermediate/two_tower/interactions")
    assert sorted(clean["timestamp"]) == sorted(pairs["ts"] // 1000)  # milliseconds -> seconds
    assert clean["rating"].isna().all() and set(clean["event"]) <= {"purchase", "cart", "remove"}
    # the purchase's weight rides with the kept row into the splits
    assert (clean["weight"] == clean["event"].map({"purchase": 2.0}).fillna(1.0)).all()
    train = pd.read_parquet(tmp_path / "data/05_model_input/two_tower/splits/train")
    assert set(train["weight"]) <= {1.0, 2.0} and (train["weight"] == 2.0).any()
