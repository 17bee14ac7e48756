"""Evaluation: embeddings, AUC, Recall@K / NDCG@K against a most-popular baseline."""

from kedro.pipeline import Pipeline, node

from .nodes import embed_users_and_items, evaluate_retrieval


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                embed_users_and_items,
                inputs=["two_tower_model", "user_index@pandas", "item_index@pandas"],
                outputs=["user_embeddings", "item_embeddings"],
                name="embed_users_and_items",
            ),
            node(
                evaluate_retrieval,
                inputs=[
                    "user_embeddings",
                    "item_embeddings",
                    "train@pandas",
                    "validation@pandas",
                    "test@pandas",
                    "item_popularity@pandas",
                    "split_statistics",
                    "two_tower_training_summary",
                    "params:two_tower.evaluation",
                ],
                outputs=["two_tower_metrics", "two_tower_test_metrics", "two_tower_metrics_at_k"],
                name="evaluate_retrieval",
            ),
        ],
        namespace="evaluation",
        prefix_datasets_with_namespace=False,
    )
