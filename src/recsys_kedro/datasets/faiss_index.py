"""A Kedro dataset for FAISS item indexes (:mod:`recsys_kedro.retrieval.index`)."""

from __future__ import annotations

from copy import deepcopy
from pathlib import PurePosixPath
from typing import Any

import faiss
import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_filepath_str, get_protocol_and_path

from recsys_kedro.retrieval.index import deserialize_index, serialize_index


class FaissIndexDataset(AbstractDataset[faiss.Index, faiss.Index]):
    """Saves and loads a ``faiss.Index`` in FAISS's own binary format, via fsspec.

    ``save`` writes the bytes of :func:`~recsys_kedro.retrieval.index.serialize_index`
    (the format of ``faiss.write_index``); ``load`` returns the index, with its search
    settings (``nprobe``, ``efSearch``) as saved. Anything that is not a ``faiss.Index`` is
    refused before a file is written.

    Example catalog entry:

    .. code-block:: yaml

        item_index:
          type: recsys_kedro.datasets.faiss_index.FaissIndexDataset
          filepath: data/06_models/recommend/retrieval_index.faiss
          metadata:
            kedro-viz:
              layer: models

    On object storage, with credentials from ``credentials.yml``:

    .. code-block:: yaml

        item_index:
          type: recsys_kedro.datasets.faiss_index.FaissIndexDataset
          filepath: s3://my-bucket/06_models/recommend/retrieval_index.faiss
          credentials: s3_credentials
    """

    def __init__(
        self,
        *,
        filepath: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates a new ``FaissIndexDataset`` pointing to ``filepath``.

        Args:
            filepath: where the index lives: a local path or any fsspec URI (``s3://``,
                ``gcs://``, ``abfs://`` ...).
            credentials: passed to the fsspec filesystem (e.g. ``key`` / ``secret``).
            fs_args: extra arguments of the fsspec filesystem; ``open_args_load`` /
                ``open_args_save`` go to ``fs.open`` when loading / saving. Local folders
                are created on save (``auto_mkdir``).
            metadata: free-form metadata, ignored by the dataset (e.g. ``kedro-viz`` layer).
        """
        fs_args = deepcopy(fs_args) or {}
        self._fs_open_args_load = fs_args.pop("open_args_load", {}) or {}
        self._fs_open_args_save = fs_args.pop("open_args_save", {}) or {}
        credentials = deepcopy(credentials) or {}
        protocol, path = get_protocol_and_path(filepath)
        if protocol == "file":
            fs_args.setdefault("auto_mkdir", True)
        self._protocol = protocol
        self._filepath = PurePosixPath(path)
        self._fs = fsspec.filesystem(protocol, **credentials, **fs_args)
        self._full = filepath
        self.metadata = metadata

    def _path(self) -> str:
        return get_filepath_str(self._filepath, self._protocol)

    def load(self) -> faiss.Index:
        if not self._exists():
            raise DatasetError(
                f"no FAISS index at {self._full}: run the pipeline stage that builds the "
                "item index first"
            )
        with self._fs.open(self._path(), mode="rb", **self._fs_open_args_load) as f:
            data = f.read()
        try:
            return deserialize_index(data)
        except ValueError as exc:
            raise DatasetError(f"{self._full}: {exc}") from exc

    def save(self, data: faiss.Index) -> None:
        if not isinstance(data, faiss.Index):
            raise DatasetError(
                f"{self._full}: can only save a faiss.Index (e.g. what "
                f"recsys_kedro.retrieval.build_index returns), got {type(data).__name__}"
            )
        payload = serialize_index(data)
        with self._fs.open(self._path(), mode="wb", **self._fs_open_args_save) as f:
            f.write(payload)
        self._fs.invalidate_cache(self._path())

    def _exists(self) -> bool:
        return self._fs.exists(self._path())

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._full, "protocol": self._protocol}
