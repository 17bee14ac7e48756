"""``AbsentDataset``: a table a user does not have, loaded as ``None``."""

from __future__ import annotations

from typing import Any

from kedro.io.core import AbstractDataset, DatasetError


class AbsentDataset(AbstractDataset[None, None]):
    """Stands in for an input the project can do without, such as a side table: it loads as
    ``None`` and the node that reads it falls back to its behaviour without the data (the
    feature schema then declares no features for that table). Read-only.

    .. code-block:: yaml

        raw_users:                    # no user table: users are known by their id only
          type: recsys_kedro.datasets.absent_dataset.AbsentDataset
    """

    def __init__(self, *, metadata: dict[str, Any] | None = None) -> None:
        self.metadata = metadata

    def load(self) -> None:
        return None

    def save(self, data: Any) -> None:
        raise DatasetError(
            "AbsentDataset stands in for a missing input; nothing can be saved to it"
        )

    def _describe(self) -> dict[str, Any]:
        return {}

    def _exists(self) -> bool:
        return True  # there is nothing to read, by design
