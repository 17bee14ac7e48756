"""Export: train/validation/test as Mosaic MDS shards (written from the Spark partitions)."""

from kedro.pipeline import Pipeline, node

from .nodes import to_mds_frame


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                to_mds_frame,
                inputs=[f"{split}@spark", "params:two_tower.export.num_partitions"],
                outputs=f"{split}_mds",
                name=f"export_{split}",
            )
            for split in ("train", "validation", "test")
        ],
        namespace="export",
        prefix_datasets_with_namespace=False,
    )
