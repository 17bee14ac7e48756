"""The `recommend` pipeline (the two-stage funnel)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
