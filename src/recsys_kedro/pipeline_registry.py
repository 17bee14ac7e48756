"""Project pipelines."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from recsys_kedro.pipelines import dlrm, recommend, two_tower, two_tower_tune


def register_pipelines() -> dict[str, Pipeline]:
    """The runnable pipelines: ``two_tower`` (the default), ``two_tower_tune`` (an Optuna
    search over the two-tower's parameters), ``dlrm`` and ``recommend`` (the two-stage
    funnel: two-tower retrieval, then a DLRM ranker on its candidates).

    Each model's pipeline composes stage pipelines under its own namespace: its own
    (ingestion/features for ``two_tower``, data generation and evaluation for ``dlrm``) and
    the shared ``export`` and ``training`` modular pipelines, written once. The stages are
    not registered on their own (their dataset names only resolve inside a namespace); run
    one with ``kedro run --pipelines=two_tower --namespaces=two_tower.features``.
    """
    pipelines = {
        "two_tower": two_tower.create_pipeline(),
        "two_tower_tune": two_tower_tune.create_pipeline(),
        "dlrm": dlrm.create_pipeline(),
        "recommend": recommend.create_pipeline(),
    }
    pipelines["__default__"] = pipelines["two_tower"]
    return pipelines
