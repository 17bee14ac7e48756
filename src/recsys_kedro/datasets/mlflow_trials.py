"""A Kedro dataset for a hyperparameter study: a JSON file, and one nested MLflow run per trial."""

from __future__ import annotations

import json
import math
from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path

from recsys_kedro.reporting import mlflow_metric_name


class MlflowTrialsDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """Saves a study (``StudyResult.to_dict()``) as JSON and, inside an MLflow run, logs every
    trial as a nested child run: its parameters, its metrics, its state; a failed trial's run
    ends ``FAILED`` with the error as a tag. ``load`` reads the JSON back.

    Example catalog entry:

    .. code-block:: yaml

        two_tower.tune_trials:
          type: recsys_kedro.datasets.mlflow_trials.MlflowTrialsDataset
          filepath: data/08_reporting/two_tower_tune_trials.json
    """

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._filepath = PurePosixPath(path)
        self._fs = fsspec.filesystem(protocol)
        self._full = filepath
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        if not self._exists():
            raise DatasetError(f"no study at {self._full}: run the tuning pipeline first")
        with self._fs.open(str(self._filepath), "r") as f:
            return json.load(f)

    def save(self, data: dict[str, Any]) -> None:
        trials = data.get("trials") if isinstance(data, dict) else None
        if not isinstance(trials, list):
            raise DatasetError("MlflowTrialsDataset saves a study dictionary with a 'trials' list")
        self._fs.makedirs(str(self._filepath.parent), exist_ok=True)
        with self._fs.open(str(self._filepath), "w") as f:
            json.dump(data, f, indent=2)
        self._log_nested_runs(data)

    @staticmethod
    def _log_nested_runs(data: dict[str, Any]) -> None:
        import mlflow

        if mlflow.active_run() is None:
            return
        for trial in data["trials"]:
            failed = trial.get("state") != "COMPLETE"
            mlflow.start_run(run_name=f"trial-{trial['number']}", nested=True)
            try:
                mlflow.log_params(dict(trial.get("params", {})))
                # The names the training curves use; NaN is not a metric value.
                metrics = {
                    mlflow_metric_name(k): v
                    for k, v in trial.get("metrics", {}).items()
                    if math.isfinite(v)
                }
                if metrics:
                    mlflow.log_metrics(metrics)
                mlflow.set_tags(
                    {
                        "trial": trial["number"],
                        "state": trial.get("state", "FAIL"),
                        "seconds": round(float(trial.get("seconds", 0.0)), 1),
                        **({"error": str(trial["error"])[:5000]} if trial.get("error") else {}),
                    }
                )
            finally:
                mlflow.end_run(status="FAILED" if failed else "FINISHED")  # back to the parent

    def _exists(self) -> bool:
        return self._fs.exists(str(self._filepath))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._full, "protocol": self._protocol}
