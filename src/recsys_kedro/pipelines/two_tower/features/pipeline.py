"""Features: indexes, split and statistics, in Spark."""

from kedro.pipeline import Pipeline, node

from recsys_kedro.data.interactions import (
    index_interactions,
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
                inputs="int_interactions",
                outputs="user_index@spark",
                name="index_users",
            ),
            node(
                index_items,
                inputs="int_interactions",
                outputs="item_index@spark",
                name="index_items",
            ),
            node(
                index_interactions,
                inputs=["int_interactions", "user_index@spark", "item_index@spark"],
                outputs="interactions",
                name="index_interactions",
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
