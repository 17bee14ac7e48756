"""`kedro viz build` succeeds and the graph reads ingestion -> ... -> evaluation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kedro_viz_build(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()  # the package itself is installed (editable) in the venv
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    kedro = Path(sys.executable).with_name("kedro")
    subprocess.run(
        [str(kedro), "viz", "build"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    graph = json.loads((tmp_path / "build" / "api" / "main").read_text())
    layers = "raw intermediate primary feature model_input models model_output reporting"
    assert graph["layers"] == layers.split()
    modular = {n["name"] for n in graph["nodes"] if n["type"] == "modularPipeline"}
    assert {"ingestion", "features", "export", "training", "evaluation"} <= modular
