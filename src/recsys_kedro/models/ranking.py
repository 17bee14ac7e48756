"""The DLRM-family ranking model (DLRM, DLRM-DCN, DeepFM), its train task and checkpoints.

The architectures are TorchRec's own (:class:`torchrec.models.dlrm.DLRM`,
:class:`torchrec.models.dlrm.DLRM_DCN`, :class:`torchrec.models.deepfm.SimpleDeepFMNN`);
this module only configures them. Modules follow TorchRec's layout: :class:`RankingModel`
scores (one job per module), :class:`RankingTrainTask` owns the loss and takes TorchRec's
typed ``Batch`` (exactly the contract of TorchRec's ``DLRMTrain``). Nothing here knows about
Kedro, Spark or distributed launch.

Notation: ``B`` rows, ``D`` dense features (``len(dense_features)``), ``F`` sparse features,
``E`` the embedding dimension.
"""

from __future__ import annotations

import contextlib
import dataclasses
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

ARCHITECTURES = ("dlrm", "dlrm_dcn", "deepfm")
POOLINGS = ("sum", "mean")
CHECKPOINT_FORMAT = "recsys_kedro.ranking/v1"
LABEL = "label"
#: Architectures whose dense arch projects the dense features into the embedding space.
_DLRM_FAMILY = ("dlrm", "dlrm_dcn")
_POOLING_TYPES = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}


def _names(value: Any, field: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError(f"{field} must be a list of column names, got the string {value!r}")
    names = tuple(str(v) for v in value)
    if len(set(names)) != len(names):
        raise ValueError(f"{field} lists a column twice: {list(names)}")
    return names


def _ints(value: Any, field: str) -> tuple[int, ...]:
    if isinstance(value, str | int):
        raise ValueError(f"{field} must be a list of integers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or int(v) != v:
            raise ValueError(f"{field} must hold integers, got {list(value)}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class RankingConfig:
    """Everything needed to rebuild a :class:`RankingModel` (stored beside its weights).

    Attributes:
        dense_features: Numeric columns, the ``(B, D)`` dense input (at least one).
        sparse_features: Categorical id columns, one embedding table each (at least one).
        cardinalities: Number of ids of each sparse feature (ids are ``0 .. n - 1``).
        jagged_features: The sparse features holding several ids per row (multi-hot bags,
            pooled with ``pooling``); the others hold one id per row.
        architecture: ``dlrm``, ``dlrm_dcn`` (DLRM with a low-rank cross network as the
            interaction) or ``deepfm``.
        embedding_dim: ``E``, the dimension of every embedding table.
        dense_arch_layer_sizes: MLP over the dense features (``dlrm``, ``dlrm_dcn``); the last
            size must be ``embedding_dim`` (the dense vector joins the embeddings).
        over_arch_layer_sizes: MLP over the interactions (``dlrm``, ``dlrm_dcn``); at least two
            layers, the last of size 1 (the logit).
        dcn_num_layers, dcn_low_rank_dim: The cross network of ``dlrm_dcn``.
        deepfm_hidden_layer_size: Hidden size of DeepFM's dense arch.
        deepfm_dimension: Output size of DeepFM's deep interaction.
        pooling: How a bag of several ids is pooled: ``sum`` or ``mean``.
        dense_mean, dense_std: Optional standardisation of the dense input, one value per
            dense feature (from the training rows): the model sees ``(x - mean) / std``.
            Part of the model, so whoever loads the checkpoint scores raw features alike.
    """

    dense_features: tuple[str, ...]
    sparse_features: tuple[str, ...]
    cardinalities: tuple[int, ...]
    jagged_features: tuple[str, ...] = ()
    architecture: str = "dlrm"
    embedding_dim: int = 16
    dense_arch_layer_sizes: tuple[int, ...] = (64, 16)
    over_arch_layer_sizes: tuple[int, ...] = (128, 64, 1)
    dcn_num_layers: int = 3
    dcn_low_rank_dim: int = 16
    deepfm_hidden_layer_size: int = 64
    deepfm_dimension: int = 16
    pooling: str = "mean"
    dense_mean: tuple[float, ...] | None = None
    dense_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        # Lists (from JSON / YAML) become tuples: the config stays hashable and comparable.
        for name in ("dense_features", "sparse_features", "jagged_features"):
            object.__setattr__(self, name, _names(getattr(self, name), name))
        for name in ("cardinalities", "dense_arch_layer_sizes", "over_arch_layer_sizes"):
            object.__setattr__(self, name, _ints(getattr(self, name), name))
        self._check_features()
        self._check_sizes()
        self._check_scaling()

    def _check_scaling(self) -> None:
        if (self.dense_mean is None) != (self.dense_std is None):
            raise ValueError("dense_mean and dense_std go together: give both or neither")
        if self.dense_mean is None:
            return
        mean = tuple(float(v) for v in self.dense_mean)
        std = tuple(float(v) for v in self.dense_std)
        n = len(self.dense_features)
        if len(mean) != n or len(std) != n:
            raise ValueError(
                f"dense_mean and dense_std need one value per dense feature ({n}), got "
                f"{len(mean)} and {len(std)}"
            )
        if not all(np.isfinite(mean)) or not all(np.isfinite(s) and s > 0 for s in std):
            raise ValueError(f"dense_mean must be finite and dense_std > 0, got {mean}, {std}")
        object.__setattr__(self, "dense_mean", mean)
        object.__setattr__(self, "dense_std", std)

    def _check_features(self) -> None:
        if not self.dense_features:
            raise ValueError(
                "dense_features is empty: the ranking models project the dense features into "
                "the embedding space and need at least one numeric column"
            )
        if not self.sparse_features:
            raise ValueError(
                "sparse_features is empty: the ranking models need at least one categorical "
                "id column (one embedding table each)"
            )
        both = sorted(set(self.dense_features) & set(self.sparse_features))
        if both:
            raise ValueError(f"columns {both} are in both dense_features and sparse_features")
        if LABEL in (*self.dense_features, *self.sparse_features):
            raise ValueError(f"{LABEL!r} is the label column; it cannot also be a feature")
        if len(self.cardinalities) != len(self.sparse_features):
            raise ValueError(
                f"cardinalities has {len(self.cardinalities)} entries for "
                f"{len(self.sparse_features)} sparse_features {list(self.sparse_features)}: "
                "give one number of ids per sparse feature, in the same order"
            )
        small = [
            f"{name}={n}"
            for name, n in zip(self.sparse_features, self.cardinalities, strict=True)
            if n < 1
        ]
        if small:
            raise ValueError(f"cardinalities must be >= 1 (ids 0 .. n - 1), got {small}")
        stray = sorted(set(self.jagged_features) - set(self.sparse_features))
        if stray:
            raise ValueError(
                f"jagged_features {stray} are not among the sparse_features "
                f"{list(self.sparse_features)}: a multi-hot feature is a sparse feature too"
            )

    def _check_sizes(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        for name in (
            "embedding_dim",
            "dcn_num_layers",
            "dcn_low_rank_dim",
            "deepfm_hidden_layer_size",
            "deepfm_dimension",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("dense_arch_layer_sizes", "over_arch_layer_sizes"):
            sizes = getattr(self, name)
            if not sizes or min(sizes) < 1:
                raise ValueError(f"{name} must be a non-empty list of sizes >= 1, got {sizes}")
        if self.architecture not in _DLRM_FAMILY:
            return
        if self.dense_arch_layer_sizes[-1] != self.embedding_dim:
            raise ValueError(
                f"dense_arch_layer_sizes ends with {self.dense_arch_layer_sizes[-1]} but "
                f"embedding_dim is {self.embedding_dim}: {self.architecture} joins the dense "
                "vector to the embeddings, so the last dense arch size must equal embedding_dim"
            )
        over = self.over_arch_layer_sizes
        if len(over) < 2 or over[-1] != 1:
            example = [*(over[:-1] if len(over) > 1 else (64,)), 1]
            raise ValueError(
                f"over_arch_layer_sizes must have at least two layers and end with 1 (the "
                f"logit), got {list(over)}; e.g. {example}"
            )

    @property
    def layout(self) -> BatchLayout:
        """The loader columns that make this model's :class:`Batch`."""
        return BatchLayout(
            dense=self.dense_features,
            sparse=self.sparse_features,
            jagged=self.jagged_features,
            label=LABEL,
        )


def make_embedding_bag_collection(
    config: RankingConfig, device: torch.device | str | None = None
) -> EmbeddingBagCollection:
    """One table ``t_<feature>`` per sparse feature. ``device="meta"`` defers allocation to DMP."""
    return EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name=f"t_{feature}",
                embedding_dim=config.embedding_dim,
                num_embeddings=cardinality,
                feature_names=[feature],
                pooling=_POOLING_TYPES[config.pooling],
            )
            for feature, cardinality in zip(
                config.sparse_features, config.cardinalities, strict=True
            )
        ],
        device=torch.device(device) if device is not None else None,
    )


class RankingModel(nn.Module):
    """A TorchRec ranking module (``.model``) returning one logit per row.

    Args:
        model: ``DLRM``, ``DLRM_DCN`` or a ``SimpleDeepFMNN`` whose final sigmoid was removed:
            ``forward(dense (B, D), kjt) -> (B, 1)`` raw logits.
        config: The config it was built from (kept for checkpoints and input checks).

    Call: ``forward(dense_features (B, D) float32, sparse_features: KeyedJaggedTensor with the
    keys config.sparse_features) -> logits (B,)`` (raw logits, not probabilities).
    """

    def __init__(self, model: nn.Module, config: RankingConfig) -> None:
        super().__init__()
        ebcs = [m for m in model.modules() if isinstance(m, EmbeddingBagCollection)]
        assert len(ebcs) == 1, f"expected one EmbeddingBagCollection, found {len(ebcs)}"
        features = [f for c in ebcs[0].embedding_bag_configs() for f in c.feature_names]
        assert features == list(config.sparse_features), (
            f"the tables' features {features} must be the sparse features "
            f"{list(config.sparse_features)}, in that order"
        )
        assert not any(isinstance(m, nn.Sigmoid) for m in model.over_arch.modules()), (
            "the model must return logits: its over arch ends in a sigmoid"
        )
        self.model = model
        self.config = config
        self.scaled = config.dense_mean is not None
        if self.scaled:
            # Derived from the config, not weights: kept out of the state dict.
            device = next(p.device for p in model.over_arch.parameters())
            mean = torch.tensor(config.dense_mean, dtype=torch.float32, device=device)
            std = torch.tensor(config.dense_std, dtype=torch.float32, device=device)
            self.register_buffer("dense_mean", mean, persistent=False)
            self.register_buffer("dense_std", std, persistent=False)

    @property
    def embedding_bag_collection(self) -> EmbeddingBagCollection:
        return self.model.sparse_arch.embedding_bag_collection

    def forward(
        self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor
    ) -> torch.Tensor:
        if self.scaled:
            dense_features = (dense_features - self.dense_mean) / self.dense_std
        return self.model(dense_features, sparse_features).squeeze(-1)


def _build_deepfm(config: RankingConfig, ebc: EmbeddingBagCollection) -> nn.Module:
    from torchrec.models.deepfm import SimpleDeepFMNN

    model = SimpleDeepFMNN(
        num_dense_features=len(config.dense_features),
        embedding_bag_collection=ebc,
        hidden_layer_size=config.deepfm_hidden_layer_size,
        deep_fm_dimension=config.deepfm_dimension,
    )
    # TorchRec's DeepFM OverArch is Linear -> Sigmoid, i.e. it returns probabilities. Drop the
    # sigmoid so that the model returns logits like DLRM: the loss is then the numerically
    # stable BCE-with-logits (log-sigmoid computed directly, no log(0) when a probability
    # saturates to 0 or 1 in float32), and scoring applies the sigmoid itself.
    layers = model.over_arch.model
    assert isinstance(layers[-1], nn.Sigmoid), "TorchRec's DeepFM OverArch changed"
    layers[-1] = nn.Identity()
    return model


def build_ranking_model(
    config: RankingConfig,
    device: torch.device | str | None = None,
    embedding_device: torch.device | str | None = None,
) -> RankingModel:
    """An unsharded :class:`RankingModel` for ``config`` (random weights).

    Args:
        config: The model.
        device: Where every dense parameter is created and initialised.
        embedding_device: Where the embedding tables are created (default ``device``);
            ``"meta"`` allocates nothing, for the sharder to place each shard on its rank.
    """
    from torchrec.models.dlrm import DLRM, DLRM_DCN

    ebc = make_embedding_bag_collection(
        config, device=embedding_device if embedding_device is not None else device
    )
    dense_device = torch.device(device) if device is not None else None
    # Not every TorchRec arch takes a device (SimpleDeepFMNN, DLRM_DCN's cross network):
    # create all dense parameters under the device context instead.
    with dense_device if dense_device is not None else contextlib.nullcontext():
        if config.architecture == "dlrm":
            model: nn.Module = DLRM(
                embedding_bag_collection=ebc,
                dense_in_features=len(config.dense_features),
                dense_arch_layer_sizes=list(config.dense_arch_layer_sizes),
                over_arch_layer_sizes=list(config.over_arch_layer_sizes),
                dense_device=dense_device,
            )
        elif config.architecture == "dlrm_dcn":
            model = DLRM_DCN(
                embedding_bag_collection=ebc,
                dense_in_features=len(config.dense_features),
                dense_arch_layer_sizes=list(config.dense_arch_layer_sizes),
                over_arch_layer_sizes=list(config.over_arch_layer_sizes),
                dcn_num_layers=config.dcn_num_layers,
                dcn_low_rank_dim=config.dcn_low_rank_dim,
                dense_device=dense_device,
            )
        else:
            model = _build_deepfm(config, ebc)
    return RankingModel(model, config)


class RankingTrainTask(nn.Module):
    """Wraps a :class:`RankingModel` with its loss, binary cross-entropy on the logits.

    Call: ``forward(batch) -> (loss (), (loss detached (), logits (B,), labels (B,)))``, the
    contract of TorchRec's ``DLRMTrain`` (what ``TrainPipelineSparseDist`` expects).
    """

    def __init__(self, model: RankingModel) -> None:
        super().__init__()
        assert isinstance(model, RankingModel), f"expected a RankingModel, got {type(model)}"
        self.model = model
        self.loss_fn = nn.BCEWithLogitsLoss()

    def forward(
        self, batch: Batch
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        logits = self.model(batch.dense_features, batch.sparse_features)
        labels = batch.labels.float()
        loss = self.loss_fn(logits, labels)
        return loss, (loss.detach(), logits.detach(), labels.detach())


# --- scoring -------------------------------------------------------------------------------


def predict_proba(
    model: RankingModel, batch: Batch | tuple[torch.Tensor, KeyedJaggedTensor]
) -> np.ndarray:
    """Click probabilities ``(B,)`` float32 (sigmoid of the logits) of one batch.

    ``batch`` is a :class:`Batch` (e.g. ``model.config.layout.to_batch(columns)``) or a pair
    ``(dense (B, D), kjt)``. Scores in eval mode without gradients (the model's mode is
    restored); the batch is moved to the model's device.
    """
    if isinstance(batch, Batch):
        dense, kjt = batch.dense_features, batch.sparse_features
    else:
        dense, kjt = batch
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(dense.to(device).float(), kjt.to(device))
    finally:
        model.train(was_training)
    return torch.sigmoid(logits).float().cpu().numpy()


def frame_columns(frame: Any, config: RankingConfig) -> dict[str, torch.Tensor]:
    """Loader-style columns of a pandas frame: ``config``'s features and ``label`` (zeros
    when absent), jagged features as ``<name>__values`` / ``<name>__lengths``."""
    from recsys_kedro.mds.block_format import lengths_column, values_column

    n = len(frame)
    labels = frame["label"].to_numpy(np.float32) if "label" in frame else np.zeros(n, np.float32)
    out: dict[str, torch.Tensor] = {LABEL: torch.from_numpy(labels)}
    for name in config.dense_features:
        out[name] = torch.from_numpy(frame[name].to_numpy(np.float32))
    for name in config.sparse_features:
        if name in config.jagged_features:
            arrays = frame[name].to_numpy()
            out[values_column(name)] = torch.from_numpy(
                np.concatenate(arrays).astype(np.int64) if n else np.zeros(0, np.int64)
            )
            out[lengths_column(name)] = torch.from_numpy(
                np.fromiter((len(a) for a in arrays), np.int32, n)
            )
        else:
            out[name] = torch.from_numpy(frame[name].to_numpy(np.int64))
    return out


def score_frame(model: RankingModel, frame: Any, chunk_rows: int = 65536) -> np.ndarray:
    """Probabilities ``(len(frame),)`` of every row of a pandas frame (unsharded model)."""
    layout = model.config.layout
    parts = [
        predict_proba(
            model, layout.to_batch(frame_columns(frame.iloc[i : i + chunk_rows], model.config))
        )
        for i in range(0, len(frame), chunk_rows)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


# --- checkpoints -----------------------------------------------------------------------------


def make_model_file(config: RankingConfig, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The saved form of a model: its config and its full (unsharded) state dict, whose keys
    are those of :class:`RankingModel`."""
    return _make_model_file(CHECKPOINT_FORMAT, dataclasses.asdict(config), state_dict)


def model_from_file(checkpoint: dict[str, Any]) -> RankingModel:
    """Rebuild an eval-mode CPU :class:`RankingModel` from :func:`make_model_file`'s dict."""
    check_format(checkpoint, CHECKPOINT_FORMAT)
    model = build_ranking_model(RankingConfig(**checkpoint["config"]), device="cpu")
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model.eval()


def load_ranking_model(path: str) -> RankingModel:
    """Load a trained ranking model in any fresh process.

    Example::

        from recsys_kedro.models.ranking import load_ranking_model, predict_proba
        model = load_ranking_model("data/06_models/ranking.pt")
        probabilities = predict_proba(model, model.config.layout.to_batch(columns))
    """
    return model_from_file(load_model_file(path))
