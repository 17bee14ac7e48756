"""The one place checkpoints are written and read.

A checkpoint is a plain dictionary ``{"format": str, "config": dict, "state_dict": {name:
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


class CheckpointError(ValueError):
    """A file that is not a checkpoint of the expected kind."""


def make_checkpoint(
    fmt: str, config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """The saved form of a model: its format tag, its config and its full state dict."""
    return {
        "format": fmt,
        "config": dict(config),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }


def save_checkpoint(checkpoint: Mapping[str, Any], path: str) -> None:
    """``torch.save`` to any fsspec path (folders are created)."""
    with fsspec.open(path, "wb", auto_mkdir=True) as f:
        torch.save(dict(checkpoint), f)


def read_checkpoint(file: BinaryIO) -> dict[str, Any]:
    """Read a checkpoint from an open binary file; tensors and plain values only."""
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError of a corrupt zip, ...
        raise CheckpointError(
            f"cannot read the checkpoint safely ({type(exc).__name__}: {exc}); it must hold "
            "only tensors and plain values, as written by save_checkpoint"
        ) from exc
    if not isinstance(checkpoint, dict) or not {"format", "config", "state_dict"} <= set(
        checkpoint
    ):
        raise CheckpointError(
            "not a recsys_kedro checkpoint: expected a dict with 'format', 'config' and "
            "'state_dict'"
        )
    return checkpoint


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read a checkpoint from any fsspec path (see :func:`read_checkpoint`)."""
    with fsspec.open(path, "rb") as f:
        return read_checkpoint(f)


def check_format(checkpoint: Mapping[str, Any], expected: str) -> None:
    """Raise :class:`CheckpointError` unless ``checkpoint`` is of format ``expected``."""
    fmt = checkpoint.get("format")
    if fmt != expected:
        raise CheckpointError(f"expected a {expected!r} checkpoint, got format={fmt!r}")
