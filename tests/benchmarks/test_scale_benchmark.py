"""The scale benchmark runs every stage end to end on a tiny dataset; its counts must agree.

Figures (times, memory) are not judged, only present; the row counts are: what the
generator promises, ingestion keeps, the split divides and the export writes.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from recsys_kedro.benchmarks.scale import STAGES, main, score_sample
from recsys_kedro.data.synthetic_ratings import SyntheticRatingsSpec, user_activity

pytestmark = pytest.mark.slow

N, USERS, ITEMS, EVAL_USERS = 10_000, 1_000, 300, 50


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, spark):
    """One run of the command's main() in this process, on the test session's Spark (which it
    leaves running); training still runs in processes of its own, as the command's does."""
    work = tmp_path_factory.mktemp("scale") / "work"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        main([
            "--interactions", str(N), "--users", str(USERS), "--items", str(ITEMS),
            "--eval-users", str(EVAL_USERS), "--work-dir", str(work),
        ])  # fmt: skip
    assert spark.range(3).count() == 3  # the session it did not make is still running
    return out.getvalue().strip().splitlines(), work


def test_the_last_line_has_time_and_memory_per_stage(tiny_run):
    lines, _ = tiny_run
    summary = json.loads(lines[-1])
    assert summary["interactions"] == N
    assert set(STAGES) <= set(summary["wall_s"]) and set(STAGES) <= set(summary["peak_rss_mb"])
    for stage in STAGES:
        assert summary["wall_s"][stage] > 0, stage
        peak = summary["peak_rss_mb"][stage]
        assert 0 < peak["driver"] <= peak["tree"], stage  # the tree holds the driver
    # The torch ranks and Spark's JVM are in the tree: training's tree is far above the driver.
    assert summary["peak_rss_mb"]["train"]["tree"] > summary["peak_rss_mb"]["train"]["driver"] + 200
    table = [line.split()[0] for line in lines if line.split()]
    assert all(stage in table for stage in STAGES)  # one printed row per stage


def test_counts_in_equal_counts_out(tiny_run):
    summary = json.loads(tiny_run[0][-1])
    counts = summary["counts"]
    assert counts["raw_rows"] > N  # the earlier re-ratings ...
    assert counts["ingested_rows"] == counts["interactions_rows"] == N  # ... are removed
    assert sum(counts["split_rows"].values()) == N
    assert counts["exported_rows"] == counts["split_rows"]
    assert min(counts["split_rows"].values()) > 0
    assert 0 < counts["train_rows_seen"] <= counts["exported_rows"]["train"]
    assert counts["n_users"] == USERS and counts["n_items"] <= ITEMS


def test_evaluation_scores_a_sample_and_says_so(tiny_run):
    evaluation = json.loads(tiny_run[0][-1])["evaluation"]
    assert evaluation["scorer"] == "full" and "sample" in evaluation["method"]
    assert evaluation["n_eval_users"] == evaluation["sampled_users"] == EVAL_USERS
    assert evaluation["candidate_users"] > EVAL_USERS
    for k in (10, 20, 100):
        assert 0 <= evaluation[f"popularity_recall@{k}"] <= 1
        assert 0 < evaluation[f"recall@{k}"] <= 1


def test_the_work_dir_is_kept_with_every_stage_output(tiny_run):
    _, work = tiny_run
    for folder in ("01_raw", "02_intermediate", "04_feature", "05_model_input/mds/train"):
        assert (work / folder).is_dir(), folder
    assert (work / "06_models" / "two_tower.pt").is_file()


def test_a_non_empty_work_dir_is_refused(tmp_path):
    (tmp_path / "something").write_text("x")
    with pytest.raises(SystemExit, match="not an empty folder"):
        main(["--work-dir", str(tmp_path), "--interactions", "10", "--users", "5"])


def test_faiss_and_full_catalogue_scoring_agree():
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(40, 8)), rng.normal(size=(300, 8))
    test_users, test_items = rng.integers(0, 40, 400), rng.integers(0, 300, 400)
    excl_users, excl_items = rng.integers(0, 40, 1000), rng.integers(0, 300, 1000)
    args = (users, items, test_users, test_items, excl_users, excl_items, [1, 10, 50])
    full = score_sample(*args, batch_size=16, scorer="full")
    faiss = score_sample(*args, batch_size=16, scorer="faiss")
    assert full.keys() == faiss.keys()
    for key, value in full.items():
        assert faiss[key] == pytest.approx(value, abs=1e-9), key
    assert 0 < full["recall@10"] < full["recall@50"] < 1


@pytest.mark.parametrize("n", [20_000, 2_000_000, 20_000_000])
def test_user_activity_sums_to_the_interactions_within_the_cap(n):
    users = 2_000 if n == 20_000 else 1_000_000
    items = 500 if n == 20_000 else 100_000
    spec = SyntheticRatingsSpec(interactions=n, users=users, items=items)
    activity = user_activity(spec)
    assert activity.sum() == n and activity.size == users
    assert activity.min() >= spec.min_interactions >= 1
    assert activity.max() <= spec.max_user_interactions
    assert activity[0] == activity.max() and (np.diff(activity) <= 1).all()  # rank 0: most active
