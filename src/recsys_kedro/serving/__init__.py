"""Serving: the recommend funnel as one MLflow pyfunc model."""
