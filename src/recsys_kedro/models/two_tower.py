"""A TorchRec two-tower retrieval model, its training task and its checkpoint format.

Modules follow TorchRec's layout: :class:`TwoTower` only encodes (one job per module),
:class:`TwoTowerTrainTask` owns the loss and takes TorchRec's typed ``Batch``.
Nothing here knows about Kedro, Spark or distributed launch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_kedro.models.batch import Batch, BatchLayout
from recsys_kedro.models.model_file import check_format, load_model_file
from recsys_kedro.models.model_file import make_model_file as _make_model_file

USER_FEATURE = "user_idx"
ITEM_FEATURE = "item_idx"
LOSSES = ("softmax", "bce")
CHECKPOINT_FORMAT = "recsys_kedro.two_tower/v1"
#: The two-tower's batch: user and item ids, no dense features.
BATCH_LAYOUT = BatchLayout(sparse=(USER_FEATURE, ITEM_FEATURE), label="label")


SideFeature = tuple[str, int, int]
"""A side feature of a tower: ``(name, cardinality, width)``; width 1 = one value per id,
more = a multi-hot bag (padded with -1)."""


@dataclass(frozen=True)
class TwoTowerConfig:
    """Everything needed to rebuild a :class:`TwoTower` (stored beside its weights).

    Side features (optional): ``user_side`` / ``item_side`` are sparse features of each
    id (:data:`SideFeature`), each with its own table pooled by mean into its tower;
    ``user_dense`` / ``item_dense`` count dense values per id. The per-id values are
    buffers of the model (:meth:`TwoTower.set_side_tables`), so a saved model encodes any
    id alone. With side features an item never seen in training (``item_known`` 0) has its
    id embedding zeroed: it is its attributes; ``item_id_dropout`` zeroes a share of the
    training rows' item ids too, so the item tower learns to work from attributes alone.
    """

    num_users: int
    num_items: int
    embedding_dim: int = 64
    layer_sizes: tuple[int, ...] = (128, 64)
    normalize: bool = True
    user_side: tuple[SideFeature, ...] = ()
    item_side: tuple[SideFeature, ...] = ()
    user_dense: int = 0
    item_dense: int = 0
    item_id_dropout: float = 0.0

    def __post_init__(self) -> None:
        for entity in ("user_side", "item_side"):
            features = tuple((str(n), int(c), int(w)) for n, c, w in getattr(self, entity))
            names = [n for n, _, _ in features]
            if len(set(names)) != len(names) or any(c < 1 or w < 1 for _, c, w in features):
                raise ValueError(
                    f"{entity} needs distinct names, cardinalities >= 1 and widths >= 1, "
                    f"got {features}"
                )
            object.__setattr__(self, entity, features)
        if self.user_dense < 0 or self.item_dense < 0:
            raise ValueError("user_dense and item_dense count dense values: >= 0")
        if not 0.0 <= self.item_id_dropout < 1.0:
            raise ValueError(f"item_id_dropout must be in [0, 1), got {self.item_id_dropout}")
        if self.num_users < 1 or self.num_items < 1:
            raise ValueError(
                f"num_users={self.num_users} and num_items={self.num_items} must be >= 1: "
                "the training split has no users or no items"
            )
        if self.embedding_dim < 1 or not self.layer_sizes or min(self.layer_sizes) < 1:
            raise ValueError(
                f"embedding_dim={self.embedding_dim} and layer_sizes={self.layer_sizes} "
                "must be positive and layer_sizes non-empty"
            )
        object.__setattr__(self, "layer_sizes", tuple(int(s) for s in self.layer_sizes))

    @property
    def output_dim(self) -> int:
        return self.layer_sizes[-1]

    @property
    def has_side(self) -> bool:
        return bool(self.user_side or self.item_side or self.user_dense or self.item_dense)


def make_batch(users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor) -> Batch:
    """A TorchRec :class:`Batch` of ``(B,)`` user ids, item ids and labels (no dense features).

    ``sparse_features`` has the keys ``[user_idx, item_idx]``, one id per row and key.
    """
    if not (users.shape == items.shape == labels.shape) or users.dim() != 1:
        raise ValueError(
            f"users, items and labels must be 1-D of one length, got "
            f"{tuple(users.shape)}, {tuple(items.shape)}, {tuple(labels.shape)}"
        )
    return BATCH_LAYOUT.to_batch({USER_FEATURE: users, ITEM_FEATURE: items, "label": labels})


def negative_features(count: int) -> tuple[str, ...]:
    """Names of ``count`` sparse features of uniformly sampled negative items."""
    return tuple(f"neg_item_idx_{i}" for i in range(int(count)))


def side_key(id_feature: str, side: str) -> str:
    """The key of side feature ``side`` of the ids of ``id_feature`` in the model's KJT."""
    return f"{id_feature}:{side}"


def make_embedding_bag_collection(
    config: TwoTowerConfig,
    device: torch.device | str | None = None,
    negatives: Sequence[str] = (),
) -> EmbeddingBagCollection:
    """The user and item tables, and one table per side feature. ``device="meta"`` defers
    allocation to DMP.

    ``negatives``: extra features of the item table (uniformly sampled negative items,
    training only), looked up in the same table as ``item_idx`` (and their side features in
    the item side tables).
    """
    tables = [
        EmbeddingBagConfig(
            name="t_user",
            embedding_dim=config.embedding_dim,
            num_embeddings=config.num_users,
            feature_names=[USER_FEATURE],
            pooling=PoolingType.SUM,
        ),
        EmbeddingBagConfig(
            name="t_item",
            embedding_dim=config.embedding_dim,
            num_embeddings=config.num_items,
            feature_names=[ITEM_FEATURE, *negatives],
            pooling=PoolingType.SUM,
        ),
    ]
    for ids, side in ((USER_FEATURE, config.user_side), (ITEM_FEATURE, config.item_side)):
        owners = [ids] if ids == USER_FEATURE else [ITEM_FEATURE, *negatives]
        for name, cardinality, _ in side:
            tables.append(
                EmbeddingBagConfig(
                    name=f"t_{ids}_{name}",
                    embedding_dim=config.embedding_dim,
                    num_embeddings=cardinality,
                    feature_names=[side_key(owner, name) for owner in owners],
                    pooling=PoolingType.MEAN,
                )
            )
    return EmbeddingBagCollection(
        tables=tables, device=torch.device(device) if device is not None else None
    )


def _tower(in_dim: int, layer_sizes: Sequence[int], device: torch.device | None) -> nn.Sequential:
    """MLP with ReLU between layers and a linear last layer (a dot-product space needs signs)."""
    layers: list[nn.Module] = []
    prev = in_dim
    for i, size in enumerate(layer_sizes):
        layers.append(nn.Linear(prev, size, device=device))
        if i < len(layer_sizes) - 1:
            layers.append(nn.ReLU())
        prev = size
    return nn.Sequential(*layers)


class TwoTower(nn.Module):
    """Query (user) and candidate (item) towers over one ``EmbeddingBagCollection``.

    Args:
        embedding_bag_collection: tables for the features ``user_idx`` and ``item_idx``
            (any other id feature of the item table is a negative item, one id per row) and,
            with side features, one table per side feature
            (:func:`make_embedding_bag_collection`).
        layer_sizes: MLP sizes of each tower; the last one is the output dimension ``D``.
        normalize: L2-normalise the tower outputs (cosine similarity, scaled by the loss).
        device: where the towers' dense parameters and the side tables live.
        config: the model's config; its side features (if any) make the per-id buffers,
            filled by :meth:`set_side_tables` or a state dict.

    Call: ``forward(kjt) -> (query (B, D), candidate (B, D), negatives (B * k, D))`` with
    ``k`` negative features (``negatives`` is ``(0, D)`` without them), feature by feature.
    ``kjt`` holds the ids only; the model adds each id's side features itself.
    """

    def __init__(
        self,
        embedding_bag_collection: EmbeddingBagCollection,
        layer_sizes: Sequence[int],
        normalize: bool = True,
        device: torch.device | None = None,
        config: TwoTowerConfig | None = None,
    ) -> None:
        super().__init__()
        configs = embedding_bag_collection.embedding_bag_configs()
        tables = {f: c.name for c in configs for f in c.feature_names}
        assert USER_FEATURE in tables and ITEM_FEATURE in tables, (
            f"the collection must have the features {USER_FEATURE!r} and {ITEM_FEATURE!r}, "
            f"got {sorted(tables)}"
        )
        ids = [f for f in tables if ":" not in f]
        negatives = tuple(f for f in ids if f not in (USER_FEATURE, ITEM_FEATURE))
        assert all(tables[f] == tables[ITEM_FEATURE] for f in negatives), (
            f"extra features {negatives} must be negative items of the item table "
            f"{tables[ITEM_FEATURE]!r}"
        )
        self.negative_features = negatives
        self.user_side = tuple(config.user_side) if config else ()
        self.item_side = tuple(config.item_side) if config else ()
        self.item_id_dropout = float(config.item_id_dropout) if config else 0.0
        wanted = {side_key(USER_FEATURE, n) for n, _, _ in self.user_side}
        wanted |= {side_key(f, n) for f in (ITEM_FEATURE, *negatives) for n, _, _ in self.item_side}
        assert wanted == set(tables) - set(ids), (
            f"the collection's side features {sorted(set(tables) - set(ids))} must be the "
            f"config's {sorted(wanted)}"
        )
        assert len(layer_sizes) > 0, "each tower needs at least one layer"
        dims = {f: c.embedding_dim for c in configs for f in c.feature_names}
        user_dense = int(config.user_dense) if config else 0
        item_dense = int(config.item_dense) if config else 0
        user_in = dims[USER_FEATURE] * (1 + len(self.user_side)) + user_dense
        item_in = dims[ITEM_FEATURE] * (1 + len(self.item_side)) + item_dense
        self.ebc = embedding_bag_collection
        self.query_tower = _tower(user_in, layer_sizes, device)
        self.candidate_tower = _tower(item_in, layer_sizes, device)
        self.normalize = normalize
        # Per-id side values: (ids, width) indexes padded with -1, (ids, n) dense values,
        # and which items training saw (the others are their attributes only).
        self.has_side = bool(config is not None and config.has_side)
        if self.has_side:
            assert config is not None
            for entity, side, n in (
                ("user", self.user_side, config.num_users),
                ("item", self.item_side, config.num_items),
            ):
                for i, (_, _, width) in enumerate(side):
                    empty = torch.zeros(n, width, dtype=torch.long, device=device)
                    self.register_buffer(f"{entity}_side_{i}", empty)
            self.register_buffer(
                "user_dense", torch.zeros(config.num_users, user_dense, device=device)
            )
            self.register_buffer(
                "item_dense", torch.zeros(config.num_items, item_dense, device=device)
            )
            self.register_buffer("item_known", torch.ones(config.num_items, device=device))

    def materialize_side_tables(self, device: torch.device) -> None:
        """Allocate the side buffers on ``device`` (after building on the meta device)."""
        for name, buffer in list(self.named_buffers(recurse=False)):
            setattr(self, name, torch.zeros_like(buffer, device=device))

    @torch.no_grad()
    def set_side_tables(self, tables: Mapping[str, Any]) -> None:
        """Fill the side buffers: ``{"user": {name: (num_users, width)}, "item": {...},
        "user_dense": (num_users, n), "item_dense": (num_items, n), "item_known":
        (num_items,)}`` (array-likes; indexes padded with -1)."""
        assert self.has_side, "the model has no side features"
        for entity, side in (("user", self.user_side), ("item", self.item_side)):
            for i, (name, cardinality, _) in enumerate(side):
                buffer = getattr(self, f"{entity}_side_{i}")
                values = torch.as_tensor(np.asarray(tables[entity][name]), dtype=torch.long)
                assert values.shape == buffer.shape, (
                    f"{entity} side feature {name!r}: values {tuple(values.shape)}, "
                    f"expected {tuple(buffer.shape)}"
                )
                assert int(values.max()) < cardinality and int(values.min()) >= -1, (
                    f"{entity} side feature {name!r} holds an index outside [-1, {cardinality})"
                )
                buffer.copy_(values)
        for name in ("user_dense", "item_dense", "item_known"):
            buffer = getattr(self, name)
            values = torch.as_tensor(np.asarray(tables[name], dtype=np.float32))
            assert values.shape == buffer.shape, (
                f"{name}: {tuple(values.shape)}, expected {tuple(buffer.shape)}"
            )
            assert torch.isfinite(values).all(), f"{name} must be finite"
            buffer.copy_(values)

    def _with_side(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """``kjt`` plus, for every id feature with side features, one key per side feature
        holding each row's values (rows without an id hold none)."""
        if not (self.user_side or self.item_side):
            return kjt
        keys, values, lengths = list(kjt.keys()), [kjt.values()], [kjt.lengths()]
        owners = [(USER_FEATURE, "user", self.user_side)]
        owners += [(f, "item", self.item_side) for f in (ITEM_FEATURE, *self.negative_features)]
        for feature, entity, side in owners:
            jt = kjt[feature]
            present = jt.lengths() > 0  # (B,): each row holds one id or none
            ids = jt.values().long()
            for i, (name, _, width) in enumerate(side):
                rows = torch.full(
                    (present.shape[0], width), -1, dtype=torch.long, device=ids.device
                )
                rows[present] = getattr(self, f"{entity}_side_{i}")[ids]
                keep = rows >= 0
                keys.append(side_key(feature, name))
                values.append(rows[keep].to(kjt.values().dtype))
                lengths.append(keep.sum(1).to(kjt.lengths().dtype))
        return KeyedJaggedTensor.from_lengths_sync(
            keys=keys, values=torch.cat(values), lengths=torch.cat(lengths)
        )

    def _tower_input(
        self, pooled: Any, feature: str, entity: str, ids: torch.Tensor
    ) -> torch.Tensor:
        """The id embedding (zeroed for items training never saw, and for the dropped
        training rows), the side features' pooled embeddings and the dense values."""
        if not self.has_side:
            return pooled[feature]
        side = self.user_side if entity == "user" else self.item_side
        own = pooled[feature]
        if entity == "item":
            keep = self.item_known[ids]
            if self.training and self.item_id_dropout > 0:
                drop = torch.rand(keep.shape, device=keep.device) < self.item_id_dropout
                keep = keep * (~drop).to(keep.dtype)
            own = own * keep.unsqueeze(1)
        parts = [own, *(pooled[side_key(feature, n)] for n, _, _ in side)]
        dense = getattr(self, f"{entity}_dense")
        if dense.shape[1]:
            parts.append(dense[ids])
        return torch.cat(parts, dim=1)

    def _project(self, tower: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
        out = tower(pooled)
        return nn.functional.normalize(out, dim=-1) if self.normalize else out

    def forward(self, kjt: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled = self.ebc(self._with_side(kjt))
        users = kjt[USER_FEATURE].values().long()
        query = self._project(
            self.query_tower, self._tower_input(pooled, USER_FEATURE, "user", users)
        )
        items = [
            self._tower_input(pooled, f, "item", kjt[f].values().long())
            for f in (ITEM_FEATURE, *self.negative_features)
        ]
        # One pass of the candidate tower over the batch's items and the negatives.
        candidates = self._project(self.candidate_tower, torch.cat(items))
        n = query.shape[0]
        return query, candidates[:n], candidates[n:]

    @torch.no_grad()
    def encode_users(self, users: torch.Tensor) -> torch.Tensor:
        """Query embeddings ``(N, D)`` for user indexes ``(N,)`` (unsharded model only)."""
        return self._encode(users, USER_FEATURE)

    @torch.no_grad()
    def encode_items(self, items: torch.Tensor) -> torch.Tensor:
        """Candidate embeddings ``(N, D)`` for item indexes ``(N,)`` (unsharded model only)."""
        return self._encode(items, ITEM_FEATURE)

    def _encode(self, ids: torch.Tensor, feature: str) -> torch.Tensor:
        n = ids.shape[0]
        keys = [USER_FEATURE, ITEM_FEATURE, *self.negative_features]
        lengths = torch.zeros(len(keys), n, dtype=torch.int32)
        lengths[keys.index(feature)] = 1
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=keys, values=ids.long(), lengths=lengths.flatten()
        )
        pooled = self.ebc(self._with_side(kjt))
        entity = "user" if feature == USER_FEATURE else "item"
        tower = self.query_tower if feature == USER_FEATURE else self.candidate_tower
        return self._project(tower, self._tower_input(pooled, feature, entity, ids.long()))


class TwoTowerTrainTask(nn.Module):
    """Wraps a :class:`TwoTower` with its training loss.

    Losses:
        ``softmax`` (default, the retrieval objective): for every positive row ``i`` of the
        batch, a softmax over all the batch's candidates ``j`` of
        ``s_ij = <q_i, c_j> / temperature - log q(item_j)``, target ``j = i``. ``log q`` is
        the log of each item's probability of appearing as a positive (popularity), the
        sampling-bias correction of in-batch negatives; other rows holding the same item
        (accidental hits) are masked out, and with ``mask_same_user`` so are the other
        positives of the same user (pushing the user's other liked items down as
        negatives fights the objective). With ``k`` negative features (the model's
        ``negative_features``, ``B * k`` items drawn uniformly from the catalogue) every
        positive also competes with those (mixed negative sampling): then ``q(item)``
        becomes ``p(item) + k / num_items``, the expected share of the candidate slots
        the item takes by either route, so the correction stays unbiased.
        ``bce``: binary cross-entropy of ``<q_i, c_i> / temperature`` against the label, as
        in the Databricks notebook. A :class:`WeightedBatch` makes either loss the weighted
        mean over its rows (per event type, e.g. a purchase above a view).

    Call: ``forward(batch) -> (loss (), (loss detached (), logits (B,), labels (B,)))``;
    ``logits`` are the pointwise scores ``<q_i, c_i> / temperature`` (for AUC).
    """

    def __init__(
        self,
        two_tower: TwoTower,
        loss: str = "softmax",
        temperature: float = 0.05,
        item_log_q: torch.Tensor | None = None,
        mask_same_user: bool = False,
    ) -> None:
        super().__init__()
        assert loss in LOSSES, f"loss must be one of {LOSSES}, got {loss!r}"
        self.mask_same_user = bool(mask_same_user)
        assert temperature > 0, f"temperature must be > 0, got {temperature}"
        self.two_tower = two_tower
        self.loss_name = loss
        self.temperature = temperature
        if item_log_q is not None:
            assert item_log_q.dim() == 1, "item_log_q must be (num_items,)"
            assert torch.isfinite(item_log_q).all(), "item_log_q must be finite (smooth counts)"
            k = len(two_tower.negative_features)
            if k:
                share = k / item_log_q.shape[0]
                item_log_q = torch.log(item_log_q.double().exp() + share).to(item_log_q.dtype)
        self.register_buffer("item_log_q", item_log_q, persistent=False)

    def forward(
        self, batch: Batch
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        query, candidate, negatives = self.two_tower(batch.sparse_features)
        logits = (query * candidate).sum(-1) / self.temperature
        labels = batch.labels
        weights = getattr(batch, "weights", None)  # a WeightedBatch: rows weigh differently
        if self.loss_name == "bce":
            if weights is None:
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
            else:
                each = nn.functional.binary_cross_entropy_with_logits(
                    logits, labels, reduction="none"
                )
                loss = (each * weights).sum() / weights.sum().clamp_min(1e-12)
            if negatives.shape[0]:
                loss = loss + negatives.sum() * 0.0  # keep every lookup in the graph
        else:
            features = batch.sparse_features
            items = features[ITEM_FEATURE].values()
            users = features[USER_FEATURE].values() if self.mask_same_user else None
            if negatives.shape[0]:
                negative_items = torch.cat(
                    [features[f].values() for f in self.two_tower.negative_features]
                )
                candidate = torch.cat([candidate, negatives])
                items = torch.cat([items, negative_items])
            loss = self._sampled_softmax(query, candidate, items, labels, users, weights)
        return loss, (loss.detach(), logits.detach(), labels.detach())

    def _sampled_softmax(
        self,
        query: torch.Tensor,
        candidate: torch.Tensor,
        items: torch.Tensor,
        labels: torch.Tensor,
        users: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Shapes: query ``(B, D)``; labels, users, weights ``(B,)``; candidate ``(C, D)``
        and items ``(C,)`` with ``C >= B``: the batch's own items first, then any extra
        negatives. With ``weights``, the positives' losses are their weighted mean."""
        positive = labels > 0.5
        if not bool(positive.any()):
            # Keep the graph (and so the sharded backward's collectives) intact.
            return (query.sum() + candidate.sum()) * 0.0
        scores = query[positive] @ candidate.T / self.temperature  # (P, C)
        if self.item_log_q is not None:
            scores = scores - self.item_log_q[items].unsqueeze(0)
        rows = torch.nonzero(positive).squeeze(1)  # (P,) column of each row's own item
        same_item = items[rows].unsqueeze(1) == items.unsqueeze(0)  # (P, C)
        own = torch.zeros_like(same_item)
        own[torch.arange(rows.shape[0]), rows] = True
        masked = same_item
        if users is not None:
            # The same user's other liked items are not negatives for this positive.
            extra = candidate.shape[0] - users.shape[0]
            same_user = (users[rows].unsqueeze(1) == users.unsqueeze(0)) & positive
            masked = masked | nn.functional.pad(same_user, (0, extra), value=False)
        scores = scores.masked_fill(masked & ~own, float("-inf"))
        if weights is None:
            return nn.functional.cross_entropy(scores, rows)
        each = nn.functional.cross_entropy(scores, rows, reduction="none")
        w = weights[positive]
        return (each * w).sum() / w.sum().clamp_min(1e-12)


def item_log_q_from_counts(counts: torch.Tensor, smoothing: float = 1.0) -> torch.Tensor:
    """``log`` of each item's (smoothed) share of positive interactions, ``(num_items,)``."""
    counts = counts.double() + smoothing
    return (counts / counts.sum()).log().float()


# --- checkpoints -------------------------------------------------------------------------


def build_two_tower(
    config: TwoTowerConfig, device: torch.device | str | None = None, negatives: Sequence[str] = ()
) -> TwoTower:
    """An unsharded :class:`TwoTower` for ``config`` (random weights); ``negatives`` as in
    :func:`make_embedding_bag_collection` (training only: a checkpoint never has them)."""
    return TwoTower(
        make_embedding_bag_collection(config, device=device, negatives=negatives),
        layer_sizes=config.layer_sizes,
        normalize=config.normalize,
        device=torch.device(device) if device is not None else None,
        config=config,
    )


def make_model_file(config: TwoTowerConfig, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The saved form of a model: its config and its (full, unsharded) state dict."""
    return _make_model_file(CHECKPOINT_FORMAT, dataclasses.asdict(config), state_dict)


def model_from_file(checkpoint: dict[str, Any]) -> TwoTower:
    """Rebuild an eval-mode :class:`TwoTower` from :func:`make_model_file`'s dictionary."""
    check_format(checkpoint, CHECKPOINT_FORMAT)
    model = build_two_tower(TwoTowerConfig(**checkpoint["config"]), device="cpu")
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model.eval()


def load_two_tower(path: str) -> TwoTower:
    """Load a trained two-tower model saved by the pipeline, in any fresh process.

    Example::

        from recsys_kedro.models.two_tower import load_two_tower
        model = load_two_tower("data/06_models/two_tower.pt")
        users = model.encode_users(torch.tensor([0, 1]))  # (2, D)
    """
    return model_from_file(load_model_file(path))
