"""Export (shared by every model): the train/validation/test splits as Mosaic MDS shards.

A modular pipeline: instantiate it inside a model's namespace (``two_tower``, ``dlrm``), where
``{split}_split@spark`` and ``params:export`` resolve to that model's datasets and parameters.
"""

from kedro.pipeline import Pipeline, node

from recsys_kedro.data.export import to_mds_frame

SPLITS = ("train", "validation", "test")


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                to_mds_frame,
                inputs=[f"{split}_split@spark", "params:export"],
                outputs=f"{split}_mds",
                name=f"export_{split}",
            )
            for split in SPLITS
        ],
        namespace="export",
        prefix_datasets_with_namespace=False,
    )
