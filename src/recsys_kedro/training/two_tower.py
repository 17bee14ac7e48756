"""What the shared trainer needs to know about the two-tower model (:class:`TwoTowerSpec`).

``fit(TwoTowerSpec(...), TrainConfig(...))`` (:mod:`recsys_kedro.training.trainer`) trains it:
the user and item tables are sharded across ranks, the towers are data-parallel. Each epoch
is judged by full-catalogue Recall@K / NDCG@K on the validation split
(:class:`RetrievalValidator`), and the best epoch is kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from recsys_kedro.evaluation.retrieval import embedding_score_fn, full_catalogue_topk_metrics
from recsys_kedro.mds import MDSFolder, read_mds_rows
from recsys_kedro.models.batch import BatchLayout
from recsys_kedro.models.two_tower import (
    BATCH_LAYOUT,
    LOSSES,
    TwoTowerConfig,
    TwoTowerTrainTask,
    build_two_tower,
    item_log_q_from_counts,
    make_model_file,
    model_from_file,
    negative_features,
)

#: The prefix of the two-tower's weights in the train task's state dict.
_PREFIX = "two_tower."


@dataclass(frozen=True)
class TwoTowerSpec:
    """The two-tower model and its loss, as the shared trainer sees them (picklable).

    ``item_counts`` (per item index: how often it appears as a candidate, or as a positive)
    feed the log-q correction of the softmax loss; ``None`` trains without it.
    ``mask_same_user`` keeps a user's other positives out of its in-batch negatives.
    ``uniform_negatives`` (``k``) adds ``k`` items per batch row drawn uniformly from the
    catalogue to the softmax's candidates (mixed negative sampling: the in-batch negatives
    are popular items, the uniform ones reach the long tail).
    Each epoch, :class:`RetrievalValidator` computes
    ``val_recall@K`` / ``val_ndcg@K`` for every K of ``validation_ks`` (full catalogue,
    the user's train items masked; ``validation_max_users`` caps the users scored, a seeded
    sample, for large data); ``monitor`` picks the epoch kept (``None``: the last one).
    The validation loss is not reported: an in-batch softmax over a validation batch of
    another size, and of rows in another order, is not comparable with the training loss.
    """

    model: TwoTowerConfig
    loss: str = "softmax"
    temperature: float = 0.05
    item_counts: tuple[int, ...] | None = None
    mask_same_user: bool = False
    uniform_negatives: int = 0
    name: str = "two_tower"
    monitor: str | None = "val_ndcg@10"
    monitor_mode: str = "max"
    validation_ks: tuple[int, ...] = (10,)
    validation_max_users: int | None = None
    validation_seed: int = 0
    #: False: no per-epoch retrieval metrics (a refit whose training data holds the
    #: validation period has nothing held out to rank); then ``monitor`` must be None.
    validate_retrieval: bool = True
    #: The per-id side values of the model's side features (plain lists, see
    #: :meth:`TwoTower.set_side_tables`); None when the model has none.
    side_tables: dict[str, Any] | None = None
    #: The rows carry a ``weight`` column (a weighted label rule): a weighted loss.
    weighted: bool = False

    report_val_loss = False  # ModelSpec: a class attribute, not a field (see config.py)

    def __post_init__(self) -> None:
        ks = tuple(int(k) for k in self.validation_ks)
        if not ks or min(ks) < 1:
            raise ValueError(f"validation_ks must be cut-offs K >= 1, got {self.validation_ks}")
        object.__setattr__(self, "validation_ks", ks)
        if self.validation_max_users is not None and int(self.validation_max_users) < 1:
            raise ValueError(
                f"validation_max_users must be >= 1 or None, got {self.validation_max_users}"
            )
        allowed = {f"val_{m}@{k}" for m in ("recall", "ndcg") for k in ks} | {"val_auc"}
        if not self.validate_retrieval:
            allowed = {"val_auc"}
        if self.monitor is not None and self.monitor not in allowed:
            raise ValueError(
                f"monitor must be None or one of {sorted(allowed)} (the per-epoch validation "
                f"metrics), got {self.monitor!r}"
            )
        if int(self.uniform_negatives) < 0:
            raise ValueError(f"uniform_negatives must be >= 0, got {self.uniform_negatives}")
        object.__setattr__(self, "uniform_negatives", int(self.uniform_negatives))
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.model.has_side != (self.side_tables is not None):
            raise ValueError(
                "side_tables go with a model that has side features: give both or neither"
            )
        if self.item_counts is not None and len(self.item_counts) != self.model.num_items:
            raise ValueError(
                f"item_counts has {len(self.item_counts)} entries, the model "
                f"{self.model.num_items} items: both must come from the same item index"
            )

    @property
    def layout(self) -> BatchLayout:
        negatives = negative_features(self.uniform_negatives)
        n = self.model.num_items
        return dataclasses.replace(
            BATCH_LAYOUT,
            sampled=tuple((f, n) for f in negatives),
            weight="weight" if self.weighted else None,
        )

    def build_task(self, device: torch.device) -> nn.Module:
        log_q = None
        if self.loss == "softmax" and self.item_counts is not None:
            log_q = item_log_q_from_counts(torch.tensor(self.item_counts)).to(device)
        # Tables on the meta device (the sharder allocates each shard on its rank), the
        # towers on this rank's device.
        negatives = negative_features(self.uniform_negatives)
        two_tower = build_two_tower(self.model, device="meta", negatives=negatives)
        for tower in (two_tower.query_tower, two_tower.candidate_tower):
            tower.to_empty(device=device)
            for m in tower.modules():
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
        if self.side_tables is not None:
            two_tower.materialize_side_tables(device)
            two_tower.set_side_tables(self.side_tables)
        return TwoTowerTrainTask(
            two_tower,
            loss=self.loss,
            temperature=self.temperature,
            item_log_q=log_q,
            mask_same_user=self.mask_same_user,
        )

    def model_file(self, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        towers = {k[len(_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(_PREFIX)}
        return make_model_file(self.model, towers)

    def make_validator(self, train: MDSFolder, validation: MDSFolder) -> RetrievalValidator | None:
        """Read the masks and the validation positives once (rank 0); see the class. None
        when ``validate_retrieval`` is off."""
        if not self.validate_retrieval:
            return None
        return RetrievalValidator.from_folders(self, train, validation)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON): what the training node receives from the spec node."""
        out = dataclasses.asdict(self)
        out["item_counts"] = list(self.item_counts) if self.item_counts is not None else None
        out["validation_ks"] = list(self.validation_ks)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TwoTowerSpec:
        data = dict(data)
        model = TwoTowerConfig(**data.pop("model"))
        counts = data.pop("item_counts", None)
        if "validation_ks" in data:
            data["validation_ks"] = tuple(data["validation_ks"])
        return cls(model=model, item_counts=tuple(counts) if counts is not None else None, **data)


class RetrievalValidator:
    """Full-catalogue Recall@K / NDCG@K of a two-tower state dict on the validation split.

    Relevant items are the validation positives (``label == 1``); the user's training
    items are masked; the ranking rules are :mod:`recsys_kedro.evaluation.retrieval`'s,
    the same as the test evaluation's. Keys: ``val_recall@K``, ``val_ndcg@K``.
    """

    def __init__(
        self,
        spec: TwoTowerSpec,
        *,
        train_users: np.ndarray,
        train_items: np.ndarray,
        val_users: np.ndarray,
        val_items: np.ndarray,
        batch_size: int = 1024,
    ) -> None:
        self.spec = spec
        self.batch_size = batch_size
        self.exclude_users = np.asarray(train_users, dtype=np.int64)
        self.exclude_items = np.asarray(train_items, dtype=np.int64)
        users = np.asarray(val_users, dtype=np.int64)
        items = np.asarray(val_items, dtype=np.int64)
        cap = spec.validation_max_users
        distinct = np.unique(users)
        if cap is not None and distinct.size > cap:
            rng = np.random.default_rng(spec.validation_seed)
            keep = rng.choice(distinct, size=int(cap), replace=False)
            mask = np.isin(users, keep)
            users, items = users[mask], items[mask]
            # Only the sampled users are scored: their masks are all that is needed.
            mask = np.isin(self.exclude_users, keep)
            self.exclude_users, self.exclude_items = (
                self.exclude_users[mask],
                self.exclude_items[mask],
            )
        if users.size == 0:
            raise ValueError(
                "the validation split has no positive interaction: per-epoch retrieval "
                "metrics (and the choice of the epoch to keep) need some"
            )
        self.val_users, self.val_items = users, items
        self.scored_users = np.unique(users)  # the users that need a query embedding

    @classmethod
    def from_folders(
        cls, spec: TwoTowerSpec, train: MDSFolder, validation: MDSFolder
    ) -> RetrievalValidator:
        train_cols = read_mds_rows(train, ["user_idx", "item_idx"])
        val_cols = read_mds_rows(validation, ["user_idx", "item_idx", "label"])
        positive = val_cols["label"] == 1
        return cls(
            spec,
            train_users=train_cols["user_idx"],
            train_items=train_cols["item_idx"],
            val_users=val_cols["user_idx"][positive],
            val_items=val_cols["item_idx"][positive],
        )

    def __call__(self, state_dict: dict[str, torch.Tensor]) -> dict[str, float]:
        model = model_from_file(self.spec.model_file(state_dict))
        users = self.scored_users
        with torch.no_grad():
            # Only the users scored need a query embedding; the rest stay zero.
            user_emb = torch.zeros(self.spec.model.num_users, self.spec.model.output_dim)
            for chunk in torch.as_tensor(users).split(65536):
                user_emb[chunk] = model.encode_users(chunk)
            item_emb = torch.cat(
                [
                    model.encode_items(chunk)
                    for chunk in torch.arange(self.spec.model.num_items).split(65536)
                ]
            )
        metrics = full_catalogue_topk_metrics(
            embedding_score_fn(user_emb, item_emb),
            n_items=self.spec.model.num_items,
            test_users=self.val_users,
            test_items=self.val_items,
            exclude_users=self.exclude_users,
            exclude_items=self.exclude_items,
            ks=self.spec.validation_ks,
            batch_size=self.batch_size,
        )
        return {f"val_{k}": v for k, v in metrics.items() if "@" in k}


LOG_Q_SOURCES = {"positives": "n_positive", "candidates": "n_rated", "none": None}


class StaleStatisticsError(ValueError):
    """The item statistics and the item index come from different runs of the features."""


def _log_q_counts(popularity: pd.DataFrame, source: str) -> tuple[int, ...] | None:
    if source not in LOG_Q_SOURCES:
        raise ValueError(f"log_q must be one of {sorted(LOG_Q_SOURCES)}, got {source!r}")
    column = LOG_Q_SOURCES[source]
    if column is None:
        return None
    if column not in popularity:
        raise StaleStatisticsError(f"item_popularity has no {column!r} column")
    return tuple(int(c) for c in popularity[column])


def _padded(values: pd.Series, width: int) -> list[list[int]]:
    """Each row's indexes (an int, or a list of them), padded with -1 to ``width``."""
    rows = [np.atleast_1d(np.asarray(v, dtype=np.int64)) for v in values]
    return [r.tolist() + [-1] * (width - len(r)) for r in rows]


def tower_side_tables(
    user_profiles: pd.DataFrame,
    item_profiles: pd.DataFrame,
    sparse: dict[str, dict[str, int]],
    dense: dict[str, list[str]],
    item_known: np.ndarray,
) -> dict[str, Any]:
    """What the towers' side features need, from the profiles of the feature schema.

    Args:
        user_profiles, item_profiles: ``user_idx`` / ``item_idx`` (0..n-1, every id once)
            and the feature columns: a sparse feature an ``int`` index, a multi-hot one a
            list of indexes, a dense one a float.
        sparse: ``{"user": {feature: cardinality}, "item": {...}}``: the sparse and
            multi-hot features each tower reads.
        dense: ``{"user": [column, ...], "item": [...]}``: the dense columns.
        item_known: ``(num_items,)``: whether training has the item (else its id
            embedding is zeroed; it is its attributes).

    Returns:
        ``{"user_side": [[name, cardinality, width], ...], "item_side": [...],
        "user_dense": n, "item_dense": n, "tables": {...}}`` (plain lists): the
        :class:`TwoTowerConfig` fields and the spec's ``side_tables``.
    """
    out: dict[str, Any] = {"tables": {}}
    for entity, profiles in (("user", user_profiles), ("item", item_profiles)):
        key = f"{entity}_idx"
        frame = profiles.sort_values(key).reset_index(drop=True)
        if (frame[key].to_numpy() != np.arange(len(frame))).any():
            raise StaleStatisticsError(
                f"the {entity} profiles do not hold each {key} 0..{len(frame) - 1} once"
            )
        side, tables = [], {}
        for name, cardinality in sparse[entity].items():
            width = int(max((np.size(v) for v in frame[name]), default=1))
            side.append([name, int(cardinality), max(width, 1)])
            tables[name] = _padded(frame[name], max(width, 1))
        columns = list(dense[entity])
        values = frame[columns].to_numpy(np.float32) if columns else np.zeros((len(frame), 0))
        out[f"{entity}_side"] = side
        out[f"{entity}_dense"] = len(columns)
        out["tables"][entity] = tables
        out["tables"][f"{entity}_dense"] = values.tolist()
    if len(item_known) != len(item_profiles):
        raise StaleStatisticsError(
            f"item_known has {len(item_known)} entries, the item profiles {len(item_profiles)}"
        )
    out["tables"]["item_known"] = np.asarray(item_known, dtype=np.float32).tolist()
    return out


def two_tower_spec_from_params(
    split_statistics: dict[str, Any],
    item_popularity: pd.DataFrame,
    model_params: dict[str, Any],
    training_params: dict[str, Any],
    side: dict[str, Any] | None = None,
    weighted: bool = False,
) -> TwoTowerSpec:
    """The two-tower's spec: table sizes from the indexes, the loss and its log-q counts.

    Args:
        split_statistics: the sizes of the user and item indexes (``n_users``, ``n_items``).
        item_popularity: ``item_idx, n_positive, n_rated`` (log-q correction of the softmax
            loss: ``training.log_q`` picks ``candidates`` = every train row, ``positives``
            or ``none``).
        model_params: ``embedding_dim``, ``layer_sizes``, ``normalize``, and
            ``side_features`` (the towers read ``side``, the feature schema's features)
            with ``item_id_dropout``.
        side: :func:`tower_side_tables` (needed with ``side_features``).
        weighted: the rows carry a ``weight`` (a weighted label rule): a weighted loss.
        training_params: ``loss``, ``temperature``, ``log_q``, ``mask_same_user``,
            ``uniform_negatives`` (extra negatives per row, drawn uniformly),
            ``monitor`` (the per-epoch validation metric that picks the epoch kept, e.g.
            ``val_ndcg@10``; null: the last epoch) and ``validation`` (``ks``,
            ``max_users``, ``seed``).

    Raises:
        StaleStatisticsError: the popularity table does not cover the item index.
        ValueError: a bad model or training setting.
    """
    n_items = int(split_statistics["n_items"])
    popularity = item_popularity.sort_values("item_idx")
    if len(popularity) != n_items or (popularity["item_idx"].to_numpy() != range(n_items)).any():
        raise StaleStatisticsError(
            f"item_popularity covers {len(popularity)} items, the index {n_items}"
        )
    validation = dict(training_params.get("validation") or {})
    towers: dict[str, Any] = {}
    if model_params.get("side_features", False):
        if side is None:
            raise ValueError("side_features is on but no side tables were given")
        towers = {k: side[k] for k in ("user_side", "item_side", "user_dense", "item_dense")}
        towers["item_id_dropout"] = float(model_params.get("item_id_dropout", 0.0))
    return TwoTowerSpec(
        model=TwoTowerConfig(
            num_users=int(split_statistics["n_users"]),
            num_items=n_items,
            embedding_dim=int(model_params["embedding_dim"]),
            layer_sizes=tuple(model_params["layer_sizes"]),
            normalize=bool(model_params.get("normalize", True)),
            **towers,
        ),
        side_tables=side["tables"] if towers and side is not None else None,
        weighted=bool(weighted),
        loss=training_params["loss"],
        temperature=float(training_params["temperature"]),
        item_counts=_log_q_counts(popularity, training_params.get("log_q", "positives")),
        mask_same_user=bool(training_params.get("mask_same_user", False)),
        uniform_negatives=int(training_params.get("uniform_negatives", 0)),
        monitor=training_params.get("monitor", "val_ndcg@10"),
        validation_ks=tuple(validation.get("ks", (10,))),
        validation_max_users=validation.get("max_users"),
        validation_seed=int(validation.get("seed", 0)),
    )
