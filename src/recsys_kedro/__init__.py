"""recsys-kedro: deep recommender training as a Kedro data pipeline."""

__version__ = "0.1.0"
