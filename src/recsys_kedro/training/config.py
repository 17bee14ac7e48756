"""The shared trainer's contract: what a model must provide (:class:`ModelSpec`), what a
per-epoch validator computes (:class:`Validator`) and how to train (:class:`TrainConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from recsys_kedro.mds import MDSFolder
from recsys_kedro.models.batch import BatchLayout
from recsys_kedro.training.checkpointing import CheckpointPolicy

TRAIN_PIPELINES = ("auto", "plain", "sparse_dist")


@runtime_checkable
class ModelSpec(Protocol):
    """What the shared loop needs to know about a model (picklable: it crosses into the ranks).

    Attributes:
        name: The model's name, in logs and errors (e.g. ``"dlrm"``).
        layout: Which loader columns make its :class:`Batch`.
        monitor: The per-epoch history key that selects the epoch to keep (``"val_auc"``,
            ``"val_loss"``), or ``None`` to keep the last epoch.
        monitor_mode: ``"max"`` or ``"min"``.
    """

    name: str
    layout: BatchLayout
    monitor: str | None
    monitor_mode: str

    #: False drops ``val_loss`` from the history, for a loss that is not comparable between
    #: training and validation (an in-batch softmax depends on the batch size and on which
    #: rows share a batch).
    report_val_loss: bool

    def build_task(self, device: torch.device) -> nn.Module:
        """The train task: embedding collections on the ``meta`` device (the sharder allocates
        each shard on its rank), every dense parameter initialised on ``device``.
        ``forward(batch) -> (loss (), (loss detached (), logits (B,), labels (B,)))``."""
        ...

    def model_file(self, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The model file's content (config + weights), from the task's full (gathered)
        state dict."""
        ...

    def make_validator(self, train: MDSFolder, validation: MDSFolder) -> Validator | None:
        """Per-epoch metrics beyond loss and AUC, or ``None``: called once, on rank 0; the
        validator's metrics join the per-epoch history (and can be the monitor)."""
        ...


def check_spec(spec: Any) -> None:
    """Every member of :class:`ModelSpec` is there and ``monitor_mode`` is valid."""
    if not isinstance(spec, ModelSpec):
        missing = [
            name
            for name in ("name", "layout", "monitor", "monitor_mode", "report_val_loss")
            + ("build_task", "model_file", "make_validator")
            if not hasattr(spec, name)
        ]
        raise TypeError(f"{type(spec).__name__} is not a ModelSpec: it lacks {missing}")
    if spec.monitor_mode not in ("max", "min"):
        raise ValueError(f"monitor_mode must be 'max' or 'min', got {spec.monitor_mode!r}")


@runtime_checkable
class Validator(Protocol):
    """Per-epoch validation metrics computed on rank 0 from the full (gathered) state dict
    of the train task, e.g. ``{"val_ndcg@10": 0.12}``. Keys must start with ``val_``."""

    def __call__(self, state_dict: dict[str, torch.Tensor]) -> dict[str, float]: ...


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the model-independent half; picklable).

    ``batch_size`` is per rank; the global batch is ``batch_size * world_size``.
    ``patience``: stop after that many epochs without improvement of ``spec.monitor``
    (``None``: run every epoch; the best epoch is kept either way).
    ``train_pipeline``: ``auto`` (``sparse_dist`` on GPU, ``plain`` on CPU), ``plain`` or
    ``sparse_dist`` (TorchRec's ``TrainPipelineSparseDist``).
    ``checkpoints``: sharded checkpoints and resumption (``None``: neither).
    ``model_path``: where rank 0 writes the trained model (storage the caller can read).
    ``timeout_s``: the process group's timeout: a collective that waits longer for a rank (one
    that hangs, or died without its peers noticing) fails the run instead of hanging it.
    """

    train: MDSFolder
    validation: MDSFolder
    model_path: str
    epochs: int = 5
    batch_size: int = 1024
    eval_batch_size: int = 4096
    embedding_lr: float = 0.05
    dense_lr: float = 1e-3
    seed: int = 42
    use_gpu: bool = False
    cache_dir: str | None = None
    progress: bool = True
    drop_last: bool = True
    patience: int | None = None
    train_pipeline: str = "auto"
    checkpoints: CheckpointPolicy | None = None
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("embedding_lr", "dense_lr"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.patience is not None and int(self.patience) < 1:
            raise ValueError(f"patience must be >= 1 or null, got {self.patience}")
        if self.train_pipeline not in TRAIN_PIPELINES:
            raise ValueError(
                f"train_pipeline must be one of {TRAIN_PIPELINES}, got {self.train_pipeline!r}"
            )
        if not float(self.timeout_s) > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.checkpoints is not None and self.train.layout != "block":
            raise ValueError(
                "training checkpoints need the block layout of the exported MDS folders (they "
                f"resume each rank's loader exactly), got layout {self.train.layout!r}"
            )
