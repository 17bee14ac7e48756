"""The loader benchmark runs end to end on a tiny dataset (a smoke test: figures, not targets)."""

from __future__ import annotations

import json

import pytest

from recsys_kedro.benchmarks.loader import main

pytestmark = pytest.mark.slow

KEYS = (
    "rows_per_s_a", "rows_per_s_b", "rows_per_s_c", "rows_per_s_d", "rows_per_s_e",
    "ratio_c_a", "ratio_e_d", "peak_rss_mb",
)  # fmt: skip


def test_benchmark_prints_every_figure_as_its_last_line(tmp_path, spark, capsys):
    """The command's main() in this process, on the test session's Spark (it writes the data
    there and leaves the session running); every figure is still measured in a process of
    its own, as the command does."""
    main([
        "--rows", "6000", "--block-rows", "512", "--batch-size", "256", "--users", "500",
        "--items", "300", "--max-seconds", "0.5", "--train-seconds", "0.5",
        "--workdir", str(tmp_path / "bench"),
    ])  # fmt: skip
    out = capsys.readouterr()
    assert spark.range(3).count() == 3  # the session it did not make is still running
    summary = json.loads(out.out.strip().splitlines()[-1])
    for key in KEYS:
        assert summary[key] > 0, key
    assert summary["rows"] == 6000
    assert summary["ratio_c_a"] == round(summary["rows_per_s_c"] / summary["rows_per_s_a"], 2)
