"""What the shared trainer needs to know about the ranking model (:class:`RankingSpec`).

``fit(RankingSpec(...), TrainConfig(...))`` (:mod:`recsys_kedro.training.trainer`) trains it:
the embedding tables are sharded across ranks, the dense, interaction and over archs are
data-parallel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from recsys_kedro.models.batch import BatchLayout
from recsys_kedro.models.ranking import (
    RankingConfig,
    RankingTrainTask,
    build_ranking_model,
    make_checkpoint,
)

#: The prefix of the ranking model's weights in the train task's state dict.
_PREFIX = "model."
#: Per-epoch history keys of the shared trainer that can select the epoch to keep.
MONITORS = ("val_auc", "val_loss", "train_loss")


@dataclass(frozen=True)
class RankingSpec:
    """The ranking model and its loss, as the shared trainer sees them (picklable).

    The epoch with the best ``monitor`` (validation AUC by default) is kept.
    """

    model: RankingConfig
    name: str = "dlrm"
    monitor: str | None = "val_auc"
    monitor_mode: str = "max"

    def __post_init__(self) -> None:
        if not isinstance(self.model, RankingConfig):
            raise ValueError(f"model must be a RankingConfig, got {type(self.model).__name__}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if self.monitor is not None and self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS} or None, got {self.monitor!r}")
        if self.monitor_mode not in ("max", "min"):
            raise ValueError(f"monitor_mode must be 'max' or 'min', got {self.monitor_mode!r}")

    @property
    def layout(self) -> BatchLayout:
        return self.model.layout

    def build_task(self, device: torch.device) -> nn.Module:
        # Tables on the meta device (the sharder allocates each shard on its rank), every
        # dense parameter initialised on this rank's device.
        return RankingTrainTask(
            build_ranking_model(self.model, device=device, embedding_device="meta")
        )

    def checkpoint(self, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        weights = {k[len(_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(_PREFIX)}
        return make_checkpoint(self.model, weights)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON): what the training node receives from the spec node."""
        out = dataclasses.asdict(self)
        out["model"] = {k: list(v) if isinstance(v, tuple) else v for k, v in out["model"].items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankingSpec:
        data = dict(data)
        return cls(model=RankingConfig(**data.pop("model")), **data)
