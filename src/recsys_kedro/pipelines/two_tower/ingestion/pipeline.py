"""Ingestion: raw interactions (a ratings file, an event log or a table) -> labelled
interactions, one per (user, item)."""

from kedro.pipeline import Pipeline, node

from .nodes import clean_interactions


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                clean_interactions,
                inputs=["raw_interactions", "params:ingestion"],
                outputs="int_interactions",
                name="clean_interactions",
            )
        ],
        namespace="ingestion",
        prefix_datasets_with_namespace=False,
    )
