"""The loader benchmark runs end to end on a tiny dataset (a smoke test: figures, not targets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

KEYS = (
    "rows_per_s_a", "rows_per_s_b", "rows_per_s_c", "rows_per_s_d", "rows_per_s_e",
    "ratio_c_a", "ratio_e_d", "peak_rss_mb",
)  # fmt: skip


def test_benchmark_prints_every_figure_as_its_last_line(tmp_path):
    cmd = [
        sys.executable, "-m", "recsys_kedro.benchmarks.loader", "--rows", "6000",
        "--block-rows", "512", "--batch-size", "256", "--users", "500", "--items", "300",
        "--max-seconds", "0.5", "--train-seconds", "0.5", "--workdir", str(tmp_path / "bench"),
    ]  # fmt: skip
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    for key in KEYS:
        assert summary[key] > 0, key
    assert summary["rows"] == 6000
    assert summary["ratio_c_a"] == round(summary["rows_per_s_c"] / summary["rows_per_s_a"], 2)
