"""recsys-kedro: deep recommender training as a Kedro data pipeline."""

from recsys_kedro._imports import defer_streaming_dataset_families

__version__ = "0.1.0"

defer_streaming_dataset_families()
