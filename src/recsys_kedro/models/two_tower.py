"""A TorchRec two-tower retrieval model, its training task and its checkpoint format.

Modules follow TorchRec's layout: :class:`TwoTower` only encodes (one job per module),
:class:`TwoTowerTrainTask` owns the loss and takes TorchRec's typed ``Batch``.
Nothing here knows about Kedro, Spark or distributed launch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class TwoTowerConfig:
    """Everything needed to rebuild a :class:`TwoTower` (stored beside its weights)."""

    num_users: int
    num_items: int
    embedding_dim: int = 64
    layer_sizes: tuple[int, ...] = (128, 64)
    normalize: bool = True

    def __post_init__(self) -> None:
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


def make_embedding_bag_collection(
    config: TwoTowerConfig,
    device: torch.device | str | None = None,
    negatives: Sequence[str] = (),
) -> EmbeddingBagCollection:
    """The user and item tables. ``device="meta"`` defers allocation to DMP.

    ``negatives``: extra features of the item table (uniformly sampled negative items,
    training only), looked up in the same table as ``item_idx``.
    """
    return EmbeddingBagCollection(
        tables=[
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
        ],
        device=torch.device(device) if device is not None else None,
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
        embedding_bag_collection: tables for the features ``user_idx`` and ``item_idx``;
            any other feature of the item table is a negative item (one id per row).
        layer_sizes: MLP sizes of each tower; the last one is the output dimension ``D``.
        normalize: L2-normalise the tower outputs (cosine similarity, scaled by the loss).
        device: where the towers' dense parameters live.

    Call: ``forward(kjt) -> (query (B, D), candidate (B, D), negatives (B * k, D))`` with
    ``k`` negative features (``negatives`` is ``(0, D)`` without them), feature by feature.
    """

    def __init__(
        self,
        embedding_bag_collection: EmbeddingBagCollection,
        layer_sizes: Sequence[int],
        normalize: bool = True,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        configs = embedding_bag_collection.embedding_bag_configs()
        tables = {f: c.name for c in configs for f in c.feature_names}
        assert USER_FEATURE in tables and ITEM_FEATURE in tables, (
            f"the collection must have the features {USER_FEATURE!r} and {ITEM_FEATURE!r}, "
            f"got {sorted(tables)}"
        )
        negatives = tuple(f for f in tables if f not in (USER_FEATURE, ITEM_FEATURE))
        assert all(tables[f] == tables[ITEM_FEATURE] for f in negatives), (
            f"extra features {negatives} must be negative items of the item table "
            f"{tables[ITEM_FEATURE]!r}"
        )
        self.negative_features = negatives
        assert len(layer_sizes) > 0, "each tower needs at least one layer"
        dims = {f: c.embedding_dim for c in configs for f in c.feature_names}
        self.ebc = embedding_bag_collection
        self.query_tower = _tower(dims[USER_FEATURE], layer_sizes, device)
        self.candidate_tower = _tower(dims[ITEM_FEATURE], layer_sizes, device)
        self.normalize = normalize

    def _project(self, tower: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
        out = tower(pooled)
        return nn.functional.normalize(out, dim=-1) if self.normalize else out

    def forward(self, kjt: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled = self.ebc(kjt)
        query = self._project(self.query_tower, pooled[USER_FEATURE])
        items = [pooled[ITEM_FEATURE], *(pooled[f] for f in self.negative_features)]
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
        pooled = self.ebc(kjt)[feature]
        tower = self.query_tower if feature == USER_FEATURE else self.candidate_tower
        return self._project(tower, pooled)


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
        in the Databricks notebook.

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
        if self.loss_name == "bce":
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
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
            loss = self._sampled_softmax(query, candidate, items, labels, users)
        return loss, (loss.detach(), logits.detach(), labels.detach())

    def _sampled_softmax(
        self,
        query: torch.Tensor,
        candidate: torch.Tensor,
        items: torch.Tensor,
        labels: torch.Tensor,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Shapes: query ``(B, D)``; labels, users ``(B,)``; candidate ``(C, D)`` and items
        ``(C,)`` with ``C >= B``: the batch's own items first, then any extra negatives."""
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
        return nn.functional.cross_entropy(scores, rows)


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
