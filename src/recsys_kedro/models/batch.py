"""Column batches (from the MDS loaders) -> TorchRec's :class:`torchrec.datasets.utils.Batch`.

Every model of the project trains on the same typed batch: ``dense_features`` ``(B, D)``
float32, ``sparse_features`` a :class:`KeyedJaggedTensor` with one key per sparse feature, and
``labels`` ``(B,)`` float32. TorchRec's train pipelines (``TrainPipelineSparseDist``) expect
exactly this type (``to``, ``pin_memory``, ``record_stream``).

A :class:`BatchLayout` names which loader columns become which part of the batch. A scalar
sparse column holds one id per row (length 1); a jagged column arrives from
:class:`recsys_kedro.mds.block_loader.BlockBatchLoader` as ``<name>__values`` (the ids of the
B rows, concatenated) and ``<name>__lengths`` ``(B,)``. Everything is tensor ops, no per-row
Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_kedro.mds.block_format import lengths_column, values_column

__all__ = ["Batch", "BatchLayout", "WeightedBatch"]


@dataclass
class WeightedBatch(Batch):
    """A :class:`Batch` whose rows weigh in the loss: ``weights`` ``(B,)`` float32 (e.g.
    per event type). TorchRec's ``Pipelineable`` methods carry the weights along."""

    weights: torch.Tensor = None  # type: ignore[assignment]  (a dataclass after defaults)

    def to(self, device: torch.device, non_blocking: bool = False) -> WeightedBatch:
        moved = super().to(device, non_blocking=non_blocking)
        weights = self.weights.to(device=device, non_blocking=non_blocking)
        return WeightedBatch(**_fields(moved), weights=weights)

    def record_stream(self, stream: torch.Stream) -> None:
        super().record_stream(stream)
        self.weights.record_stream(stream)

    def pin_memory(self) -> WeightedBatch:
        pinned = super().pin_memory()
        return WeightedBatch(**_fields(pinned), weights=self.weights.pin_memory())


def _fields(batch: Batch) -> dict[str, object]:
    return {
        "dense_features": batch.dense_features,
        "sparse_features": batch.sparse_features,
        "labels": batch.labels,
    }


@dataclass(frozen=True)
class BatchLayout:
    """Which columns make a :class:`Batch`.

    Attributes:
        dense: Scalar columns stacked, in this order, into ``dense_features`` ``(B, D)``.
        sparse: Sparse features, in this order: the keys of ``sparse_features`` (they must be
            the feature names of the model's embedding tables).
        jagged: The subset of ``sparse`` that is multi-valued (``<name>__values`` and
            ``<name>__lengths`` columns); the others hold one id per row.
        label: The label column.
        weight: A column of row weights: the batch is then a :class:`WeightedBatch`.
        sampled: Sparse features that are not read but drawn per row, uniformly from
            ``0..n-1``, as ``(name, n)`` pairs: keys of ``sparse_features`` after ``sparse``
            (e.g. uniformly sampled negative items, looked up in the same sharded table as
            the batch's own items, so TorchRec's input distribution carries them too).
    """

    dense: tuple[str, ...] = ()
    sparse: tuple[str, ...] = ()
    jagged: tuple[str, ...] = ()
    label: str = "label"
    sampled: tuple[tuple[str, int], ...] = ()
    weight: str | None = None

    def __post_init__(self) -> None:
        for name in ("dense", "sparse", "jagged"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        sampled = tuple((str(name), int(n)) for name, n in self.sampled)
        object.__setattr__(self, "sampled", sampled)
        if any(n < 1 for _, n in sampled):
            raise ValueError(f"sampled features need a range n >= 1, got {sampled}")
        names = [*self.dense, *self.sparse, *(name for name, _ in sampled), self.label]
        names += [self.weight] if self.weight else []
        if len(set(names)) != len(names):
            raise ValueError(f"a column is listed twice in the batch layout: {names}")
        if not self.sparse:
            raise ValueError("a TorchRec batch needs at least one sparse feature")
        stray = sorted(set(self.jagged) - set(self.sparse))
        if stray:
            raise ValueError(f"jagged features {stray} are not among the sparse features")

    @property
    def columns(self) -> list[str]:
        """The loader columns to read (jagged features by their base name)."""
        return [*self.dense, *self.sparse, self.label, *([self.weight] if self.weight else [])]

    @property
    def keys(self) -> list[str]:
        """The keys of ``sparse_features``: the read sparse features, then the sampled ones."""
        return [*self.sparse, *(name for name, _ in self.sampled)]

    def to_batch(
        self, columns: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> Batch:
        """A :class:`Batch` from one batch of loader columns (on the columns' device).

        ``generator`` draws the ``sampled`` features (each rank passes its own, seeded, so
        runs repeat); without one a fixed seed is used (evaluation batches).
        """
        labels = columns[self.label]
        n = int(labels.shape[0])
        if self.dense:
            dense = torch.stack([columns[c].float() for c in self.dense], dim=1)
        else:
            dense = torch.empty((n, 0), dtype=torch.float32)
        values, lengths = [], []
        for name in self.sparse:
            if name in self.jagged:
                values.append(columns[values_column(name)].long())
                lengths.append(columns[lengths_column(name)].int())
            else:
                values.append(columns[name].long())
                lengths.append(torch.ones(n, dtype=torch.int32))
        if self.sampled:
            if generator is None:
                generator = torch.Generator().manual_seed(0)
            for name, high in self.sampled:
                drawn = columns.get(name)  # given (dummy batches) or drawn here
                if drawn is None:
                    drawn = torch.randint(high, (n,), generator=generator)
                values.append(drawn.long())
                lengths.append(torch.ones(n, dtype=torch.int32))
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=self.keys, values=torch.cat(values), lengths=torch.cat(lengths)
        )
        if self.weight:
            return WeightedBatch(
                dense_features=dense,
                sparse_features=kjt,
                labels=labels.float(),
                weights=columns[self.weight].float(),
            )
        return Batch(dense_features=dense, sparse_features=kjt, labels=labels.float())

    def dummy_batch(self) -> Batch:
        """One harmless row (id 0 for every feature, zeros, label 0): keeps a rank in step
        with the others' collectives after its own share of a split is done."""
        zero = torch.zeros(1, dtype=torch.int64)
        columns: dict[str, torch.Tensor] = {self.label: zero.float()}
        if self.weight:
            columns[self.weight] = zero.float()  # a dummy row weighs nothing
        columns.update({c: zero.float() for c in self.dense})
        for name in self.sparse:
            if name in self.jagged:
                columns[values_column(name)] = zero
                columns[lengths_column(name)] = torch.ones(1, dtype=torch.int32)
            else:
                columns[name] = zero
        columns.update({name: zero for name, _ in self.sampled})
        return self.to_batch(columns)

    def collate_rows(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Mosaic's row layout yields one dict per row: stack each (scalar) column once."""
        if self.jagged:
            raise ValueError(
                f"jagged features {list(self.jagged)} need the block layout (layout: block)"
            )
        n = len(rows)
        out = {}
        for name in self.columns:
            floats = name in (self.label, self.weight) or name in self.dense
            dtype = np.float32 if floats else np.int64
            out[name] = torch.from_numpy(np.fromiter((r[name] for r in rows), dtype, n))
        return out


def batch_size(batch: Batch) -> int:
    """Rows in a batch."""
    return int(batch.labels.shape[0])
