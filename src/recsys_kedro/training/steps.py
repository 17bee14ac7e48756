"""One rank's steps: its loader of a split, the lock-stepped batches, a training epoch
(plain loop or TorchRec's ``TrainPipelineSparseDist``) and the validation pass."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from recsys_kedro.mds import MDSFolder
from recsys_kedro.models.batch import Batch, BatchLayout, batch_size
from recsys_kedro.training.config import TrainConfig
from recsys_kedro.training.distributed import (
    DistContext,
    all_gather_arrays,
    all_reduce_sum,
    lockstep,
)


def make_loader(
    folder: MDSFolder, layout: BatchLayout, config: TrainConfig, *, train: bool, split: str
) -> Iterable[dict[str, torch.Tensor]]:
    """Column batches of one split for this rank.

    Training shuffles and drops the rank's last partial batch if ``config.drop_last``;
    evaluation keeps every row. Block-layout folders are batched with array ops; row-layout
    folders (one MDS sample per row) go through Mosaic's loader and a per-row collate.
    """
    batch = config.batch_size if train else config.eval_batch_size
    drop_last = train and config.drop_last
    cache = f"{config.cache_dir}/{split}" if config.cache_dir else None
    if folder.layout == "block":
        from recsys_kedro.mds.block_loader import BlockBatchLoader

        return BlockBatchLoader(
            folder,
            batch_size=batch,
            shuffle=train,
            seed=config.seed,
            drop_last=drop_last,
            local_cache_dir=cache,
            columns=layout.columns,
        )
    from streaming import StreamingDataLoader

    from recsys_kedro.mds import make_streaming_dataset

    dataset = make_streaming_dataset(
        folder, batch_size=batch, shuffle=train, seed=config.seed, local_cache_dir=cache
    )
    return StreamingDataLoader(
        dataset,
        batch_size=batch,
        collate_fn=layout.collate_rows,
        drop_last=drop_last,
        num_workers=0,
    )


def steps_per_epoch(
    folder: MDSFolder, loader: Iterable, config: TrainConfig, world_size: int
) -> int | None:
    """Training steps of one epoch on each rank (the progress bar's total).

    Exact for a loader with a length; for the block layout, the rows split evenly over the
    ranks (blocks are dealt whole, and lock-step ends the epoch on every rank when the first
    rank runs out, so the true count can be slightly lower).
    """
    if hasattr(loader, "__len__"):
        return len(loader)
    if folder.num_rows is None:
        return None
    per_rank = folder.num_rows / max(world_size, 1)
    steps = per_rank / config.batch_size
    return max(int(steps) if config.drop_last else math.ceil(steps), 0)


def batches(
    loader: Iterable[dict[str, torch.Tensor]],
    layout: BatchLayout,
    ctx: DistContext,
    until: str,
    generator: torch.Generator | None = None,
) -> Iterator[Batch | None]:
    """This rank's batches (on the CPU), in lock-step with the other ranks.

    ``generator`` draws the layout's sampled features (e.g. uniform negative items).
    """
    for columns in lockstep(loader, ctx, until=until):
        yield None if columns is None else layout.to_batch(columns, generator)


def train_step(model: nn.Module, optimizer, batch: Batch) -> torch.Tensor:
    """One optimisation step; returns the detached loss. (Fused embedding updates happen in
    the backward pass; ``optimizer.step`` updates the dense part.)"""
    optimizer.zero_grad()
    loss, _ = model(batch)
    loss.backward()
    optimizer.step()
    return loss.detach()


def use_sparse_dist(config: TrainConfig, ctx: DistContext) -> bool:
    if config.train_pipeline == "auto":
        return ctx.device.type == "cuda"
    return config.train_pipeline == "sparse_dist"


StepHook = Callable[[int, torch.Tensor, int], None]


def train_epoch(
    model: nn.Module,
    optimizer,
    batches: Iterator[Batch | None],
    ctx: DistContext,
    config: TrainConfig,
    bar: tqdm,
    on_step: StepHook | None = None,
    start: tuple[float, int] = (0.0, 0),
) -> tuple[float, int]:
    """One epoch of training steps; returns (sum of per-row losses, rows) of this rank.

    ``start``: the sums of a resumed epoch's steps before the checkpoint.
    ``on_step(steps, loss_sum, rows)`` runs after every step, with the steps taken by this
    call and the sums so far (``loss_sum`` stays on the device: read it only when needed).
    """
    loss_sum = torch.full((), float(start[0]), dtype=torch.float64, device=ctx.device)
    rows = int(start[1])
    steps = 0
    if use_sparse_dist(config, ctx):
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

        # A new pipeline per epoch: it keeps batches in flight, which must not leak into
        # validation (or the next epoch's shuffle).
        pipeline = TrainPipelineSparseDist(model, optimizer, ctx.device, execute_all_batches=True)
        iterator = iter(batches)
        try:
            while True:
                try:
                    loss, _, labels = pipeline.progress(iterator)
                except StopIteration:
                    break
                n = int(labels.shape[0])
                loss_sum += loss.double() * n  # stays on the device: no sync per step
                rows += n
                steps += 1
                bar.update(1)
                if on_step is not None:
                    on_step(steps, loss_sum, rows)
        finally:
            # The pipeline swaps the sharded modules' forward for its own; give it back, or
            # validation's forward finds no input dist to consume.
            pipeline.detach()
    else:
        for cpu_batch in batches:
            batch = cpu_batch.to(ctx.device)
            loss = train_step(model, optimizer, batch)
            n = batch_size(batch)
            loss_sum += loss.double() * n
            rows += n
            steps += 1
            bar.update(1)
            if bar.n % 50 == 0 and not bar.disable:
                # refresh=False: shown at the bar's next (rate-limited) redraw, not now.
                bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
            if on_step is not None:
                on_step(steps, loss_sum, rows)
    return float(loss_sum), rows


def evaluate(
    model: nn.Module, loader: Iterable, layout: BatchLayout, ctx: DistContext
) -> dict[str, float]:
    """Loss (mean over every row of the split, all ranks) and AUC of the logits."""
    from recsys_kedro.evaluation.retrieval import auc

    model.eval()
    loss_sum, rows = 0.0, 0
    logits_parts, label_parts = [], []
    with torch.no_grad():
        for cpu_batch in batches(loader, layout, ctx, until="all_done"):
            if cpu_batch is None:  # this rank is done; the others still need its collectives
                model(layout.dummy_batch().to(ctx.device))
                continue
            batch = cpu_batch.to(ctx.device)
            loss, (_, logits, labels) = model(batch)
            n = batch_size(batch)
            loss_sum += float(loss) * n  # per-batch mean -> sum over rows
            rows += n
            logits_parts.append(logits.float().cpu().numpy())
            label_parts.append(labels.cpu().numpy())
    total_loss, total_rows = all_reduce_sum([loss_sum, float(rows)], ctx.device)
    logits = all_gather_arrays(np.concatenate(logits_parts) if logits_parts else np.zeros(0))
    labels = all_gather_arrays(np.concatenate(label_parts) if label_parts else np.zeros(0))
    model.train()
    has_both = labels.size > 0 and 0 < labels.sum() < labels.size
    return {
        "loss": total_loss / max(total_rows, 1.0),
        "auc": auc(labels, logits) if has_both else float("nan"),
        "rows": total_rows,
    }
