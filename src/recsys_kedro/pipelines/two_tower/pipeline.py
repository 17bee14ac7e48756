"""two_tower: ingestion -> features -> export -> training -> evaluation, in namespace two_tower.

The export and training stages are the shared modular pipelines (also used by ``dlrm``); the
namespace turns their ``train_mds``, ``model``, ``params:training`` ... into
``two_tower.train_mds``, ``two_tower.model``, ``params:two_tower.training`` .... The raw
ratings stay a global dataset (other pipelines read the same source).
"""

from kedro.pipeline import Pipeline, node

from recsys_kedro.pipelines.shared import export, training

from . import evaluation, features, ingestion
from .nodes import two_tower_spec

NAMESPACE = "two_tower"


def create_pipeline(**kwargs) -> Pipeline:
    spec = Pipeline(
        [
            node(
                two_tower_spec,
                inputs=[
                    "split_statistics",
                    "item_popularity@pandas",
                    "params:model",
                    "params:training",
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
        + export.create_pipeline()
        + spec
        + training.create_pipeline()
        + evaluation.create_pipeline()
    )
    return Pipeline(
        stages, namespace=NAMESPACE, inputs={"raw_interactions"}, parameters={"params:launch"}
    )
