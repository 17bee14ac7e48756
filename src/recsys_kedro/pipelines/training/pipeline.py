"""Training: TorchDistributor -> TorchRec two-tower on the MDS shards."""

from kedro.pipeline import Pipeline, node

from .nodes import plot_training_curves, train_two_tower


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                train_two_tower,
                inputs=[
                    "train_mds",
                    "validation_mds",
                    "split_statistics",
                    "item_popularity@pandas",
                    "params:two_tower.model",
                    "params:two_tower.training",
                ],
                outputs=[
                    "two_tower_model",
                    "two_tower_epoch_metrics",
                    "two_tower_training_summary",
                ],
                name="train_two_tower",
            ),
            node(
                plot_training_curves,
                inputs="two_tower_training_summary",
                outputs="two_tower_training_curves",
                name="plot_training_curves",
            ),
        ],
        namespace="training",
        prefix_datasets_with_namespace=False,
    )
