"""two_tower_tune: an Optuna search over the two-tower's parameters, judged on validation."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
