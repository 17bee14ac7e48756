"""The serving benchmark runs end to end on a small saved recommender (figures not judged)."""

from __future__ import annotations

import mlflow.pyfunc
import pytest

from recsys_kedro.benchmarks.serving import main
from recsys_kedro.serving.recommender import FunnelRecommender
from tests.serving.test_recommender import N_USERS, _inputs

pytestmark = pytest.mark.slow


def test_the_benchmark_measures_each_index_kind(tmp_path, capsys):
    path = tmp_path / "recommender"
    mlflow.pyfunc.save_model(str(path), python_model=FunnelRecommender(**_inputs()))
    summary = main(["--model", str(path), "--requests", "5", "--batch", "4", "--kinds", "hnsw,ivf"])
    out = capsys.readouterr().out.strip().splitlines()
    assert set(summary["by_index"]) == {"saved", "hnsw", "ivf"}
    for figures in summary["by_index"].values():
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] and figures["users_per_s"] > 0
    assert summary["batch_users"] == min(4, N_USERS)
    assert out[-1].startswith("{") and '"p50_ms"' in out[-1]  # the last line is the JSON
