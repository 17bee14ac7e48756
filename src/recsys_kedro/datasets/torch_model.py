"""A Kedro dataset for the project's trained model files (:mod:`recsys_kedro.models.model_file`)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path

from recsys_kedro.models.model_file import ModelFileError, read_model_file, save_model_file


class TorchModelDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """Saves and loads a trained model file (``{"format", "config", "state_dict"}``) via fsspec.

    Loading reads tensors and plain values only (``weights_only=True``): a file that carries
    anything else is refused instead of being unpickled.

    Example catalog entry:

    .. code-block:: yaml

        two_tower_model:
          type: recsys_kedro.datasets.torch_model.TorchModelDataset
          filepath: data/06_models/two_tower.pt
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
            raise DatasetError(
                f"no model file at {self._full}: run the pipeline's training stage first"
            )
        with self._fs.open(str(self._filepath), "rb") as f:
            try:
                return read_model_file(f)
            except ModelFileError as exc:
                raise DatasetError(f"{self._full}: {exc}") from exc

    def save(self, data: dict[str, Any]) -> None:
        missing = {"format", "config", "state_dict"} - set(data)
        if missing:
            # Refuse now what load() would refuse later.
            raise DatasetError(
                f"{self._full}: not a model file (missing {sorted(missing)}); save what "
                "make_model_file returns"
            )
        save_model_file(data, self._full)

    def _exists(self) -> bool:
        return self._fs.exists(str(self._filepath))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._full, "protocol": self._protocol}
