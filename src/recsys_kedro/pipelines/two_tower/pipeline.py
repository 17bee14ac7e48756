"""two_tower: ingestion -> features -> export -> training -> evaluation."""

from kedro.pipeline import Pipeline

from recsys_kedro.pipelines import evaluation, export, features, ingestion, training


def create_pipeline(**kwargs) -> Pipeline:
    return (
        ingestion.create_pipeline()
        + features.create_pipeline()
        + export.create_pipeline()
        + training.create_pipeline()
        + evaluation.create_pipeline()
    )
