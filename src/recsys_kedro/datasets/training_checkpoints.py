"""A Kedro dataset that names where the trainer writes its sharded checkpoints."""

from __future__ import annotations

from typing import Any

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path


class TrainingCheckpointsDataset(AbstractDataset[None, str]):
    """The folder of a model's training checkpoints (``torch.distributed.checkpoint``).

    ``load`` returns the folder's path (it need not exist yet): the training node hands it to
    the ranks, which write and read the sharded checkpoints themselves, each its own shards.
    Nothing is saved through the catalog. Declaring the folder here puts it with the other
    ``06_models`` outputs, moves it with ``data_root`` (e.g. to a Unity Catalog volume, which
    every executor can reach) and shows it in kedro-viz.

    Example catalog entry:

    .. code-block:: yaml

        "{namespace}.training_checkpoints":
          type: recsys_kedro.datasets.training_checkpoints.TrainingCheckpointsDataset
          filepath: data/06_models/checkpoints/{namespace}
    """

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        if not filepath:
            raise DatasetError("filepath is empty")
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._path = path
        self._fs = fsspec.filesystem(protocol)
        self._full = filepath.rstrip("/")
        self.metadata = metadata

    def load(self) -> str:
        return self._full

    def save(self, data: None) -> None:
        raise DatasetError(
            f"{self._full}: training checkpoints are written by the trainer's ranks, not "
            "saved through the catalog"
        )

    def _exists(self) -> bool:
        return self._fs.isdir(self._path)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._full, "protocol": self._protocol}
