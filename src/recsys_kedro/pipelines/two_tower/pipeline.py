"""two_tower: ingestion -> features -> export -> training -> evaluation, in namespace two_tower.

The export and training stages are the shared modular pipelines (also used by ``dlrm``); the
namespace turns their ``train_mds``, ``model``, ``params:training`` ... into
``two_tower.train_mds``, ``two_tower.model``, ``params:two_tower.training`` .... The raw
ratings and side tables stay global datasets (other pipelines read the same source), as does
the feature schema (``params:feature_schema``).
"""

from kedro.pipeline import Pipeline, node

from recsys_kedro.pipelines.shared import export, side_features, training

from . import evaluation, features, ingestion
from .nodes import side_tables, two_tower_spec

NAMESPACE = "two_tower"


def side_tables_pipeline() -> Pipeline:
    """The shared side-features stage, then the towers' per-id side tables (also what
    ``two_tower_tune`` trains with)."""
    tables = Pipeline(
        [
            node(
                side_tables,
                inputs=[
                    "user_profiles@pandas",
                    "item_profiles@pandas",
                    "user_feature_report",
                    "item_feature_report",
                    "item_popularity@pandas",
                    "params:feature_schema",
                ],
                outputs="side_tables",
                name="side_tables",
            )
        ],
        namespace="side_features",
        prefix_datasets_with_namespace=False,
    )
    return side_features.create_pipeline() + tables


def create_pipeline(**kwargs) -> Pipeline:
    spec = Pipeline(
        [
            node(
                two_tower_spec,
                inputs=[
                    "split_statistics",
                    "item_popularity@pandas",
                    "side_tables",
                    "params:model",
                    "params:training",
                    "params:ingestion",
                ],
                outputs="model_spec",
                name="two_tower_spec",
            )
        ],
        namespace="training",
        prefix_datasets_with_namespace=False,
    )
    stages = (
        ingestion.create_pipeline()
        + features.create_pipeline()
        + side_tables_pipeline()
        + export.create_pipeline()
        + spec
        + training.create_pipeline()
        + evaluation.create_pipeline()
    )
    return Pipeline(
        stages,
        namespace=NAMESPACE,
        inputs={"raw_interactions", "raw_users", "raw_items"},
        parameters={"params:launch", "params:feature_schema"},
    )
