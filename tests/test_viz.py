"""`kedro viz build` succeeds; each pipeline is its own chain of namespaced stages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

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
    stages = ("ingestion", "features", "export", "training", "evaluation")
    assert {f"two_tower.{s}" for s in stages} <= modular
    assert {p["id"] for p in graph["pipelines"]} == {
        "__default__",
        "two_tower",
        "two_tower_tune",
        "dlrm",
        "recommend",
    }
    tune = json.loads((tmp_path / "build" / "api" / "pipelines" / "two_tower_tune").read_text())
    tune_modular = {n["name"] for n in tune["nodes"] if n["type"] == "modularPipeline"}
    # the tuning pipeline reuses the two_tower data stages, under the same namespace
    assert {"two_tower.ingestion", "two_tower.export", "two_tower.tuning"} <= tune_modular
    dlrm = json.loads((tmp_path / "build" / "api" / "pipelines" / "dlrm").read_text())
    dlrm_modular = {n["name"] for n in dlrm["nodes"] if n["type"] == "modularPipeline"}
    assert {f"dlrm.{s}" for s in ("data", "export", "training", "evaluation")} <= dlrm_modular
    # the shared stages are the same nodes, instantiated once per pipeline
    tasks = {n["name"] for n in dlrm["nodes"] if n["type"] == "task"}
    assert {"train_model", "export_train", "read_click_logs", "evaluate_ranking"} <= tasks
    funnel = json.loads((tmp_path / "build" / "api" / "pipelines" / "recommend").read_text())
    funnel_modular = {n["name"] for n in funnel["nodes"] if n["type"] == "modularPipeline"}
    # the funnel: the two_tower stages it needs, then its own, sharing export and training
    want = ("retrieval", "features", "export", "training", "evaluation")
    assert {"two_tower.training"} | {f"recommend.{s}" for s in want} <= funnel_modular
