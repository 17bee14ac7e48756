"""Helpers for running the project through Kedro inside the test process."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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
