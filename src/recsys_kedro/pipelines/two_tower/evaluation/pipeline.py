"""Evaluation: embeddings, AUC, Recall@K / NDCG@K against most-popular and ALS baselines."""

from kedro.pipeline import Pipeline, node

from .nodes import embed_users_and_items, evaluate_retrieval, fit_als_baseline


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                embed_users_and_items,
                inputs=["model", "user_index@spark", "item_index@pandas"],
                outputs=["user_embeddings@spark", "item_embeddings"],
                name="embed_users_and_items",
            ),
            node(
                fit_als_baseline,
                inputs=[
                    "train_split@spark",
                    "validation_split@spark",
                    "test_split@spark",
                    "split_statistics",
                    "params:evaluation",
                ],
                outputs="als_baseline",
                name="fit_als_baseline",
            ),
            node(
                evaluate_retrieval,
                inputs=[
                    "user_embeddings@spark",
                    "item_embeddings",
                    "train_split@spark",
                    "validation_split@spark",
                    "test_split@spark",
                    "item_popularity@pandas",
                    "split_statistics",
                    "training_summary",
                    "als_baseline",
                    "params:evaluation",
                ],
                outputs=["metrics", "test_metrics", "run_tags", "metrics_at_k"],
                name="evaluate_retrieval",
            ),
        ],
        namespace="evaluation",
        prefix_datasets_with_namespace=False,
    )
