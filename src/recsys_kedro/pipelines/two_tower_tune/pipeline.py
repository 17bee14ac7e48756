"""two_tower_tune: the two_tower data stages, then an Optuna study in place of one training.

Same namespace and datasets as ``two_tower`` (its ingestion, features and export stages are
reused, not copied), so a search runs on exactly the data the model is trained on.
"""

from kedro.pipeline import Pipeline, node

from recsys_kedro.pipelines.shared import export
from recsys_kedro.pipelines.two_tower import features, ingestion
from recsys_kedro.pipelines.two_tower.pipeline import side_tables_pipeline

from .nodes import tune_two_tower

NAMESPACE = "two_tower"


def create_pipeline(**kwargs) -> Pipeline:
    tune = Pipeline(
        [
            node(
                tune_two_tower,
                inputs=[
                    "train_mds",
                    "validation_mds",
                    "split_statistics",
                    "item_popularity@pandas",
                    "side_tables",
                    "params:model",
                    "params:training",
                    "params:launch",
                    "params:tune",
                    "params:ingestion",
                ],
                outputs=["tune_study", "best_params", "tune_history"],
                name="tune_two_tower",
            )
        ],
        namespace="tuning",
        prefix_datasets_with_namespace=False,
    )
    stages = (
        ingestion.create_pipeline()
        + features.create_pipeline()
        + side_tables_pipeline()
        + export.create_pipeline()
    )
    return Pipeline(
        stages + tune,
        namespace=NAMESPACE,
        inputs={"raw_interactions", "raw_users", "raw_items"},
        parameters={"params:launch", "params:feature_schema"},
    )
