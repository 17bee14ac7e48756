"""What the shared trainer needs to know about the ranking model (:class:`RankingSpec`).

``fit(RankingSpec(...), TrainConfig(...))`` (:mod:`recsys_kedro.training.trainer`) trains it:
the embedding tables are sharded across ranks, the dense, interaction and over archs are
data-parallel. A ranker of candidate lists is judged each epoch by :class:`ListValidator`
(NDCG@K of the validation lists it re-orders), the metric it is deployed for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from recsys_kedro.evaluation.lists import list_metrics
from recsys_kedro.mds import MDSFolder, read_mds_layout_columns
from recsys_kedro.mds.block_format import lengths_column, values_column
from recsys_kedro.models.batch import BatchLayout
from recsys_kedro.models.ranking import (
    RankingConfig,
    RankingTrainTask,
    build_ranking_model,
    make_model_file,
    model_from_file,
    predict_proba,
)

#: The prefix of the ranking model's weights in the train task's state dict.
_PREFIX = "model."
#: Per-epoch history keys of the shared trainer that can select the epoch to keep.
MONITORS = ("val_auc", "val_loss", "train_loss")


@dataclass(frozen=True)
class RankingSpec:
    """The ranking model and its loss, as the shared trainer sees them (picklable).

    The epoch with the best ``monitor`` (validation AUC by default) is kept. With
    ``list_ks`` (and a ``list_key``, the sparse feature that names a list, e.g. the user),
    the validation rows are lists to re-order: each epoch also reports
    ``val_list_ndcg@K`` / ``val_list_recall@K`` (:class:`ListValidator`), which ``monitor``
    may name.
    """

    model: RankingConfig
    name: str = "dlrm"
    monitor: str | None = "val_auc"
    monitor_mode: str = "max"
    list_ks: tuple[int, ...] = ()
    list_key: str | None = None
    list_item: str | None = None

    report_val_loss = True  # ModelSpec: a class attribute, not a field

    def __post_init__(self) -> None:
        if not isinstance(self.model, RankingConfig):
            raise ValueError(f"model must be a RankingConfig, got {type(self.model).__name__}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        ks = tuple(int(k) for k in self.list_ks)
        if ks and (min(ks) < 1 or self.list_key is None or self.list_item is None):
            raise ValueError(
                f"list_ks {list(ks)} need cut-offs >= 1, a list_key and a list_item "
                "(the sparse features naming a list and its items)"
            )
        for key in (self.list_key, self.list_item):
            if key is not None and key not in self.model.sparse_features:
                raise ValueError(f"{key!r} is not a sparse feature of the model")
        object.__setattr__(self, "list_ks", ks)
        monitors = (*MONITORS, *(f"val_list_{m}@{k}" for m in ("ndcg", "recall") for k in ks))
        if self.monitor is not None and self.monitor not in monitors:
            raise ValueError(f"monitor must be one of {monitors} or None, got {self.monitor!r}")
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

    def model_file(self, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        weights = {k[len(_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(_PREFIX)}
        return make_model_file(self.model, weights)

    def make_validator(self, train: MDSFolder, validation: MDSFolder) -> ListValidator | None:
        """The per-epoch list metrics (rank 0), or ``None`` without ``list_ks``."""
        del train  # the lists to re-order are the validation rows
        return ListValidator.from_folder(self, validation) if self.list_ks else None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON): what the training node receives from the spec node."""
        out = dataclasses.asdict(self)
        out["model"] = {k: list(v) if isinstance(v, tuple) else v for k, v in out["model"].items()}
        out["list_ks"] = list(self.list_ks)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankingSpec:
        data = dict(data)
        return cls(model=RankingConfig(**data.pop("model")), **data)


class ListValidator:
    """NDCG@K / Recall@K of the validation lists as the ranker re-orders them.

    A list is the rows sharing ``spec.list_key``; its relevant items are its rows labelled
    1 (so the metric measures the re-ordering: positives the lists do not hold are the
    retrieval stage's loss, not the ranker's). Keys ``val_list_ndcg@K``,
    ``val_list_recall@K``; rules of :mod:`recsys_kedro.evaluation.lists`.
    """

    def __init__(self, spec: RankingSpec, columns: dict[str, np.ndarray], chunk_rows: int = 65536):
        self.spec = spec
        self.columns = columns
        self.chunk_rows = chunk_rows
        labels = np.asarray(columns[spec.model.layout.label])
        if not (labels == 1).any():
            raise ValueError(
                "the validation lists hold no positive row: the per-epoch list metrics "
                "(and the choice of the epoch to keep) need some"
            )
        self.users = np.asarray(columns[spec.list_key], dtype=np.int64)
        self.items = np.asarray(columns[spec.list_item], dtype=np.int64)
        self.positive = labels == 1

    @classmethod
    def from_folder(cls, spec: RankingSpec, folder: MDSFolder) -> ListValidator:
        layout = spec.model.layout
        jagged = list(layout.jagged)
        scalar = [c for c in layout.columns if c not in jagged]
        return cls(spec, read_mds_layout_columns(folder, scalar, jagged))

    def _chunks(self):
        layout = self.spec.model.layout
        n = self.users.size
        offsets = {
            name: np.r_[0, np.cumsum(self.columns[lengths_column(name)])] for name in layout.jagged
        }
        for start in range(0, n, self.chunk_rows):
            stop = min(start + self.chunk_rows, n)
            chunk = {}
            for name in layout.columns:
                if name in layout.jagged:
                    lo, hi = offsets[name][start], offsets[name][stop]
                    chunk[values_column(name)] = torch.as_tensor(
                        self.columns[values_column(name)][lo:hi]
                    )
                    chunk[lengths_column(name)] = torch.as_tensor(
                        self.columns[lengths_column(name)][start:stop]
                    )
                else:
                    chunk[name] = torch.as_tensor(self.columns[name][start:stop])
            yield layout.to_batch(chunk)

    def __call__(self, state_dict: dict[str, torch.Tensor]) -> dict[str, float]:
        model = model_from_file(self.spec.model_file(state_dict))
        scores = np.concatenate([predict_proba(model, batch) for batch in self._chunks()])
        metrics = list_metrics(
            self.users,
            self.items,
            scores,
            self.users[self.positive],
            self.items[self.positive],
            self.spec.list_ks,
        )
        return {f"val_list_{k}": v for k, v in metrics.items() if "@" in k}
