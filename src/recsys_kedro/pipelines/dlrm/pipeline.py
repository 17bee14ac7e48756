"""dlrm: click logs (planted, or the Criteo layout) -> export -> training -> evaluation.

Stages: ``data`` (Spark generator, split, statistics) and ``evaluation`` are specific to the
ranker; ``export`` and ``training`` are the shared modular pipelines that ``two_tower`` uses
too, instantiated here in namespace ``dlrm`` (datasets ``dlrm.*``, parameters
``params:dlrm.*``).
"""

from kedro.pipeline import Pipeline, node

from recsys_kedro.pipelines.shared import export, training

from .nodes import (
    dlrm_spec,
    evaluate_ranking,
    read_click_logs,
    split_click_logs,
    summarise_click_logs,
)

NAMESPACE = "dlrm"


def create_pipeline(**kwargs) -> Pipeline:
    data = Pipeline(
        [
            node(
                read_click_logs,
                inputs=["raw_click_logs", "params:data"],
                outputs="click_logs",
                name="read_click_logs",
            ),
            node(
                split_click_logs,
                inputs=["click_logs", "params:data"],
                outputs=[
                    "train_split@spark",
                    "validation_split@spark",
                    "test_split@spark",
                    "vocabularies",
                ],
                name="split_click_logs",
            ),
            node(
                summarise_click_logs,
                inputs=[
                    "train_split@spark",
                    "validation_split@spark",
                    "test_split@spark",
                    "vocabularies",
                    "params:data",
                ],
                outputs="data_statistics",
                name="summarise_click_logs",
            ),
        ],
        namespace="data",
        prefix_datasets_with_namespace=False,
    )
    spec = Pipeline(
        [node(dlrm_spec, ["data_statistics", "params:model"], "model_spec", name="dlrm_spec")],
        namespace="training",
        prefix_datasets_with_namespace=False,
    )
    evaluation = Pipeline(
        [
            node(
                evaluate_ranking,
                inputs=[
                    "model",
                    "train_split@pandas",
                    "validation_split@pandas",
                    "test_split@pandas",
                    "training_summary",
                    "params:evaluation",
                ],
                outputs=["metrics", "test_metrics", "run_tags", "auc_vs_oracle"],
                name="evaluate_ranking",
            )
        ],
        namespace="evaluation",
        prefix_datasets_with_namespace=False,
    )
    stages = data + export.create_pipeline() + spec + training.create_pipeline() + evaluation
    return Pipeline(stages, namespace=NAMESPACE, parameters={"params:launch"})
