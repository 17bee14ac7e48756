"""Helpers for running the project through Kedro inside the test process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import TEST_SPARK_CONF

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KEDRO = Path(sys.executable).parent / "kedro"


def make_project(root: Path, local_catalog: str | None = None) -> Path:
    """A copy of the project's configuration in ``root`` (the package is installed)."""
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    # MLflow caches tracking stores by URI for the life of the process: the default relative
    # `sqlite:///mlflow.db` would keep pointing at the first test project's folder.
    (root / "conf" / "local" / "mlflow.yml").write_text(
        f"server:\n  mlflow_tracking_uri: sqlite:///{root / 'mlflow.db'}\n"
    )
    if local_catalog:
        (root / "conf" / "local" / "catalog.yml").write_text(local_catalog)
    (root / "src").mkdir()
    return root


def run_project(root: Path, runtime_params: dict[str, Any], **run_kwargs: Any) -> None:
    """``kedro run`` of ``root`` in this process, as a separate ``kedro run`` would be
    (progress bars off unless ``runtime_params`` turns them on).

    MLflow keeps its active run in process-global state that a separate process would not
    share: a run left open by an earlier session would swallow this session's parameters
    (kedro-mlflow reuses an active run), so none may be open before or after.
    """
    import mlflow
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    launch = runtime_params.setdefault("launch", {})
    launch.setdefault("progress", False)  # no progress bars in test logs
    while mlflow.active_run():
        mlflow.end_run()
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    try:
        bootstrap_project(root)
        with KedroSession.create(project_path=root, runtime_params=runtime_params) as session:
            session.run(**run_kwargs)
    finally:
        mp.undo()
        while mlflow.active_run():
            mlflow.end_run()


class BackgroundRun:
    """``kedro run --pipelines=<pipeline>`` of a project as a separate process, started at
    most once (by whichever fixture needs it first) and waited for by the tests that read its
    outputs. The parameters go to ``conf/local/parameters_test_run.yml`` (merged key by key
    into the project's), progress bars off."""

    def __init__(self, root: Path, pipeline: str, params: dict[str, Any]) -> None:
        self.root, self.pipeline = root, pipeline
        self.process: subprocess.Popen | None = None
        self.started = self.ended = 0.0
        params = {**params, "launch": {"progress": False, **params.get("launch", {})}}
        (root / "conf" / "local" / "parameters_test_run.yml").write_text(yaml.safe_dump(params))
        (root / "conf" / "local" / "spark.yml").write_text(yaml.safe_dump(TEST_SPARK_CONF))

    def start(self) -> BackgroundRun:
        if self.process is None:
            self._log = open(self.root / "kedro_run.log", "w")  # noqa: SIM115 (closed in wait)
            self.started = time.time()
            self.process = subprocess.Popen(
                [str(KEDRO), "run", f"--pipelines={self.pipeline}"],
                cwd=self.root,
                env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"},
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait(self, timeout_s: float = 1200) -> Path:
        """The project's root once the run has ended; fails with the run's last output if the
        run failed."""
        self.start()
        assert self.process is not None
        if self.process.returncode is None:
            self.process.wait(timeout=timeout_s)
            self.ended = time.time()
            self._log.close()
        log = (self.root / "kedro_run.log").read_text()
        assert self.process.returncode == 0, log[-6000:]
        return self.root

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
