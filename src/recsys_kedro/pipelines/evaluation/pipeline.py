"""Evaluation: embeddings, AUC, Recall@K / NDCG@K against a most-popular baseline."""

from kedro.pipeline import Pipeline, node

from .nodes import embed_users_and_items, evaluate_retrieval


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                embed_users_and_items,
                inputs=["model", "user_index@pandas", "item_index@pandas"],
                outputs=["user_embeddings", "item_embeddings"],
                name="embed_users_and_items",
            ),
            node(
                evaluate_retrieval,
                inputs=[
                    "user_embeddings",
                    "item_embeddings",
                    "train_split@pandas",
                    "validation_split@pandas",
                    "test_split@pandas",
                    "item_popularity@pandas",
                    "split_statistics",
                    "training_summary",
                    "params:evaluation",
                ],
                outputs=["metrics", "test_metrics", "metrics_at_k"],
                name="evaluate_retrieval",
            ),
        ],
        namespace="evaluation",
        prefix_datasets_with_namespace=False,
    )
