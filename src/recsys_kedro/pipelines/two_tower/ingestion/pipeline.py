"""Ingestion: raw ratings (any supported format, or a table) -> clean interactions."""

from kedro.pipeline import Pipeline, node

from recsys_kedro.data.interactions import deduplicate_ratings


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                deduplicate_ratings,
                inputs=["raw_ratings", "params:ingestion"],
                outputs="int_ratings",
                name="deduplicate_ratings",
            )
        ],
        namespace="ingestion",
        prefix_datasets_with_namespace=False,
    )
