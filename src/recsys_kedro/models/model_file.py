"""The one place trained model files are written and read. A *model file* is what a run
produces; the resume *checkpoints* of a run in progress are
:mod:`recsys_kedro.training.checkpointing`.

A model file is a plain dictionary ``{"format": str, "config": dict, "state_dict": {name:
tensor}}``: the model's full (unsharded) weights and the configuration that rebuilds it, so a
model file is usable on its own in any process. It holds only tensors and plain values, so it
is read with ``torch.load(..., weights_only=True)``: unpickling anything else would run
whatever code a tampered file carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, BinaryIO

import fsspec
import torch


class ModelFileError(ValueError):
    """A file that is not a model file of the expected kind."""


def make_model_file(
    fmt: str, config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """The saved form of a model: its format tag, its config and its full state dict."""
    return {
        "format": fmt,
        "config": dict(config),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }


def save_model_file(model: Mapping[str, Any], path: str) -> None:
    """``torch.save`` to any fsspec path (folders are created)."""
    with fsspec.open(path, "wb", auto_mkdir=True) as f:
        torch.save(dict(model), f)


def read_model_file(file: BinaryIO) -> dict[str, Any]:
    """Read a model file from an open binary file; tensors and plain values only."""
    try:
        model = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError of a corrupt zip, ...
        raise ModelFileError(
            f"cannot read the model file safely ({type(exc).__name__}: {exc}); it must hold "
            "only tensors and plain values, as written by save_model_file"
        ) from exc
    if not isinstance(model, dict) or not {"format", "config", "state_dict"} <= set(model):
        raise ModelFileError(
            "not a recsys_kedro model file: expected a dict with 'format', 'config' and "
            "'state_dict'"
        )
    return model


def load_model_file(path: str) -> dict[str, Any]:
    """Read a model file from any fsspec path (see :func:`read_model_file`)."""
    with fsspec.open(path, "rb") as f:
        return read_model_file(f)


def check_format(model: Mapping[str, Any], expected: str) -> None:
    """Raise :class:`ModelFileError` unless ``model`` is of format ``expected``."""
    fmt = model.get("format")
    if fmt != expected:
        raise ModelFileError(f"expected a {expected!r} model file, got format={fmt!r}")
