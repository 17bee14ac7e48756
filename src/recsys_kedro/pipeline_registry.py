"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    ``find_pipelines()`` picks up every ``pipelines/<name>/create_pipeline``: the stage
    pipelines (``ingestion``, ``features``, ``export``, ``training``, ``evaluation``) and
    ``two_tower``, which composes them. ``__default__`` is ``two_tower``.
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = pipelines["two_tower"]
    return pipelines
