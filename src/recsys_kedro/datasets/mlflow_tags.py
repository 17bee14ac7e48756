"""A Kedro dataset that records counts and settings as MLflow run tags (not metrics)."""

from __future__ import annotations

from typing import Any

from kedro.io.core import AbstractDataset, DatasetError


class MlflowTagsDataset(AbstractDataset[dict[str, Any], dict[str, str]]):
    """Saves a flat ``{name: value}`` dictionary as tags of the active MLflow run.

    Counts and settings of a run (``n_users``, ``n_train``, ``world_size``, the kept epoch)
    describe it; as metrics they would open the run's metric page as a wall of one-point
    bar charts. Tags are searchable (``tags.n_train > ...`` is not, but ``tags.architecture
    = 'dlrm'`` is) and shown in the run's overview. kedro-mlflow starts the run; outside one
    (``kedro run`` without MLflow), saving is a no-op, like kedro-mlflow's own datasets.
    Values are stored as strings; ``prefix`` namespaces the names (``two_tower.n_train``).

    Example catalog entry:

    .. code-block:: yaml

        two_tower.run_tags:
          type: recsys_kedro.datasets.mlflow_tags.MlflowTagsDataset
          prefix: two_tower
    """

    def __init__(self, *, prefix: str | None = None, metadata: dict[str, Any] | None = None):
        self._prefix = prefix
        self.metadata = metadata

    def _key(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else str(name)

    def save(self, data: dict[str, Any]) -> None:
        import mlflow

        if not isinstance(data, dict):
            raise DatasetError(f"MlflowTagsDataset saves a dictionary, got {type(data).__name__}")
        nested = [k for k, v in data.items() if isinstance(v, dict | list | tuple)]
        if nested:
            raise DatasetError(f"tags must be plain values; {nested} are nested")
        if mlflow.active_run() is None:
            return
        mlflow.set_tags({self._key(k): str(v) for k, v in data.items()})

    def load(self) -> dict[str, str]:
        import mlflow

        run = mlflow.active_run()
        if run is None:
            raise DatasetError("no active MLflow run to read tags from")
        tags = mlflow.get_run(run.info.run_id).data.tags
        start = f"{self._prefix}." if self._prefix else ""
        return {k[len(start) :]: v for k, v in tags.items() if k.startswith(start)}

    def _exists(self) -> bool:
        return False  # tags live in a run, not in a place a later session can find

    def _describe(self) -> dict[str, Any]:
        return {"prefix": self._prefix}
