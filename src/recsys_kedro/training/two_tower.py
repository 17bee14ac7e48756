"""What the shared trainer needs to know about the two-tower model (:class:`TwoTowerSpec`).

``fit(TwoTowerSpec(...), TrainConfig(...))`` (:mod:`recsys_kedro.training.trainer`) trains it:
the user and item tables are sharded across ranks, the towers are data-parallel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from recsys_kedro.models.batch import BatchLayout
from recsys_kedro.models.two_tower import (
    BATCH_LAYOUT,
    LOSSES,
    TwoTowerConfig,
    TwoTowerTrainTask,
    build_two_tower,
    item_log_q_from_counts,
    make_checkpoint,
)

#: The prefix of the two-tower's weights in the train task's state dict.
_PREFIX = "two_tower."


@dataclass(frozen=True)
class TwoTowerSpec:
    """The two-tower model and its loss, as the shared trainer sees them (picklable).

    ``item_counts`` (positives per item index) feed the log-q correction of the softmax
    loss; ``None`` trains without it. The last epoch is kept (``monitor=None``): choosing an
    epoch on pointwise validation AUC would not choose for retrieval quality.
    """

    model: TwoTowerConfig
    loss: str = "softmax"
    temperature: float = 0.05
    item_counts: tuple[int, ...] | None = None
    name: str = "two_tower"
    monitor: str | None = None
    monitor_mode: str = "max"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.item_counts is not None and len(self.item_counts) != self.model.num_items:
            raise ValueError(
                f"item_counts has {len(self.item_counts)} entries, the model "
                f"{self.model.num_items} items: both must come from the same item index"
            )

    @property
    def layout(self) -> BatchLayout:
        return BATCH_LAYOUT

    def build_task(self, device: torch.device) -> nn.Module:
        log_q = None
        if self.loss == "softmax" and self.item_counts is not None:
            log_q = item_log_q_from_counts(torch.tensor(self.item_counts)).to(device)
        # Tables on the meta device (the sharder allocates each shard on its rank), the
        # towers on this rank's device.
        two_tower = build_two_tower(self.model, device="meta")
        for tower in (two_tower.query_tower, two_tower.candidate_tower):
            tower.to_empty(device=device)
            for m in tower.modules():
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
        return TwoTowerTrainTask(
            two_tower, loss=self.loss, temperature=self.temperature, item_log_q=log_q
        )

    def checkpoint(self, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        towers = {k[len(_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(_PREFIX)}
        return make_checkpoint(self.model, towers)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON): what the training node receives from the spec node."""
        out = dataclasses.asdict(self)
        out["item_counts"] = list(self.item_counts) if self.item_counts is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TwoTowerSpec:
        data = dict(data)
        model = TwoTowerConfig(**data.pop("model"))
        counts = data.pop("item_counts", None)
        return cls(model=model, item_counts=tuple(counts) if counts is not None else None, **data)
