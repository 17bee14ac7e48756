"""Features: indexes, labels, split and statistics, in Spark."""

from kedro.pipeline import Pipeline, node

from recsys_kedro.data.interactions import (
    index_and_label,
    index_items,
    index_users,
    item_popularity,
    split_interactions,
    summarise_splits,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                index_users,
                inputs="int_ratings",
                outputs="user_index@spark",
                name="index_users",
            ),
            node(
                index_items,
                inputs="int_ratings",
                outputs="item_index@spark",
                name="index_items",
            ),
            node(
                index_and_label,
                inputs=[
                    "int_ratings",
                    "user_index@spark",
                    "item_index@spark",
                    "params:features",
                ],
                outputs="interactions",
                name="index_and_label",
            ),
            node(
                split_interactions,
                inputs=["interactions", "params:features.split"],
                outputs=["train_split@spark", "validation_split@spark", "test_split@spark"],
                name="split_interactions",
            ),
            node(
                item_popularity,
                inputs=["train_split@spark", "item_index@spark"],
                outputs="item_popularity@spark",
                name="item_popularity",
            ),
            node(
                summarise_splits,
                inputs=[
                    "train_split@spark",
                    "validation_split@spark",
                    "test_split@spark",
                    "user_index@spark",
                    "item_index@spark",
                ],
                outputs="split_statistics",
                name="summarise_splits",
            ),
        ],
        namespace="features",
        prefix_datasets_with_namespace=False,
    )
