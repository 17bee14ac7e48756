"""Distributed two-tower training: a pure function ``train(config) -> result``.

Launched once per rank by ``TorchDistributor`` (see :mod:`recsys_kedro.training.launch`).
Each rank streams its share of the MDS shards with Mosaic, the embedding tables are
sharded by TorchRec's planner across ranks (``DistributedModelParallel``), the towers are
data-parallel. Rank 0 gathers the full model into ``config.checkpoint_path`` and every
rank returns rank 0's (small) result.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import torch
from tqdm.auto import tqdm

from recsys_kedro.mds import MDSFolder
from recsys_kedro.models.two_tower import (
    TwoTowerBatch,
    TwoTowerConfig,
    TwoTowerTrainTask,
    build_two_tower,
    item_log_q_from_counts,
    make_batch,
    make_checkpoint,
)
from recsys_kedro.training.distributed import (
    DistContext,
    all_gather_arrays,
    all_reduce_sum,
    broadcast_from_main,
    destroy_distributed,
    gather_full_state_dict,
    init_distributed,
    lockstep,
    seed_everything,
)

logger = logging.getLogger(__name__)

USER_COLUMN, ITEM_COLUMN, LABEL_COLUMN = "user_idx", "item_idx", "label"


@dataclass(frozen=True)
class TwoTowerTrainConfig:
    """Everything one training job needs; picklable, so it crosses into the ranks.

    ``batch_size`` is per rank; the global batch is ``batch_size * world_size``.
    ``item_counts`` (positives per item index) feed the log-q correction of the softmax
    loss; ``None`` trains without it.
    """

    train: MDSFolder
    validation: MDSFolder
    model: TwoTowerConfig
    checkpoint_path: str
    item_counts: tuple[int, ...] | None = None
    loss: str = "softmax"
    temperature: float = 0.05
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

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be >= 1")
        if self.item_counts is not None and len(self.item_counts) != self.model.num_items:
            raise ValueError(
                f"item_counts has {len(self.item_counts)} entries, the model "
                f"{self.model.num_items} items: both must come from the same item index"
            )


def _collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Mosaic yields one dict per row: stack each column once (Mosaic's loader counts rows
    from a dict of columns, needed for its resumable state)."""
    n = len(rows)
    return {
        USER_COLUMN: torch.from_numpy(np.fromiter((r[USER_COLUMN] for r in rows), np.int64, n)),
        ITEM_COLUMN: torch.from_numpy(np.fromiter((r[ITEM_COLUMN] for r in rows), np.int64, n)),
        LABEL_COLUMN: torch.from_numpy(np.fromiter((r[LABEL_COLUMN] for r in rows), np.float32, n)),
    }


def to_batch(columns: dict[str, torch.Tensor], device: torch.device) -> TwoTowerBatch:
    batch = make_batch(columns[USER_COLUMN], columns[ITEM_COLUMN], columns[LABEL_COLUMN])
    return batch.to(device, non_blocking=True)


def _loader(
    folder: MDSFolder, config: TwoTowerTrainConfig, *, batch_size: int, shuffle: bool, split: str
) -> Iterable[dict[str, torch.Tensor]]:
    """Column batches of one split for this rank. Training drops the rank's last partial
    batch of an epoch if ``config.drop_last``; evaluation keeps every row. Block-layout
    folders are batched with array ops; row-layout folders (one MDS sample per row) go
    through Mosaic's loader and a per-row collate."""
    drop_last = shuffle and config.drop_last
    cache = f"{config.cache_dir}/{split}" if config.cache_dir else None
    if folder.layout == "block":
        from recsys_kedro.mds.block_loader import BlockBatchLoader

        return BlockBatchLoader(
            folder,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=config.seed,
            drop_last=drop_last,
            local_cache_dir=cache,
            columns=[USER_COLUMN, ITEM_COLUMN, LABEL_COLUMN],
        )
    from streaming import StreamingDataLoader

    from recsys_kedro.mds import make_streaming_dataset

    dataset = make_streaming_dataset(
        folder, batch_size=batch_size, shuffle=shuffle, seed=config.seed, local_cache_dir=cache
    )
    return StreamingDataLoader(
        dataset, batch_size=batch_size, collate_fn=_collate, drop_last=drop_last, num_workers=0
    )


def build_sharded_model(config: TwoTowerTrainConfig, ctx: DistContext):
    """The DMP-wrapped train task, its combined optimizer and the sharding plan (collective)."""
    import torch.distributed as dist
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner
    from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
    from torchrec.distributed.sharding_plan import get_default_sharders
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter
    from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

    log_q = None
    if config.loss == "softmax" and config.item_counts is not None:
        log_q = item_log_q_from_counts(torch.tensor(config.item_counts)).to(ctx.device)
    # Tables on the meta device: DMP allocates each shard only on the rank that owns it.
    two_tower = build_two_tower(config.model, device="meta")
    two_tower.query_tower.to_empty(device=ctx.device)
    two_tower.candidate_tower.to_empty(device=ctx.device)
    for tower in (two_tower.query_tower, two_tower.candidate_tower):
        for m in tower.modules():
            if isinstance(m, torch.nn.Linear):
                m.reset_parameters()
    task = TwoTowerTrainTask(
        two_tower, loss=config.loss, temperature=config.temperature, item_log_q=log_q
    )
    # Fused row-wise Adagrad, applied inside the backward pass of the sharded tables.
    apply_optimizer_in_backward(
        RowWiseAdagrad, two_tower.ebc.parameters(), {"lr": config.embedding_lr}
    )
    topology = TopologyFactory.create_topology(
        TrainerConfig(world_size=ctx.world_size, local_world_size=ctx.local_world_size),
        kernel_config=KernelConfig(compute_device=ctx.device.type),
    )
    planner = EmbeddingShardingPlanner(topology=topology, batch_size=config.batch_size)
    sharders = get_default_sharders()
    plan = planner.collective_plan(task, sharders, dist.GroupMember.WORLD)
    model = DistributedModelParallel(module=task, device=ctx.device, plan=plan, sharders=sharders)
    dense = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(model.named_parameters())),
        lambda params: torch.optim.Adam(params, lr=config.dense_lr),
    )
    optimizer = CombinedOptimizer([model.fused_optimizer, dense])
    if ctx.is_main:
        logger.info("sharding plan:\n%s", plan)
    return model, optimizer, plan


def describe_plan(plan) -> dict[str, str]:
    """``{table: "<sharding type> on ranks [..]"}`` for every sharded table of a plan."""
    out = {}
    for module_plan in plan.plan.values():
        for table, sharding in module_plan.items():
            out[table] = f"{sharding.sharding_type} on ranks {sharding.ranks}"
    return out


def train_step(model, optimizer, batch: TwoTowerBatch) -> torch.Tensor:
    """One optimisation step; returns the detached loss. (Fused embedding updates happen in
    the backward pass; ``optimizer.step`` updates the dense towers.)"""
    optimizer.zero_grad()
    loss, _ = model(batch)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _dummy_batch(device: torch.device) -> TwoTowerBatch:
    """One row (user 0, item 0): keeps a rank in step after its share of a split is done."""
    zeros = torch.zeros(1, dtype=torch.int64)
    return make_batch(zeros, zeros, zeros.float()).to(device)


def _evaluate(model, loader: Iterable, ctx: DistContext) -> dict[str, float]:
    """Loss (mean over rows, all ranks) and AUC of the pointwise scores on one split."""
    from recsys_kedro.evaluation.retrieval import auc

    model.eval()
    loss_sum, rows = 0.0, 0
    logits_parts, label_parts = [], []
    with torch.no_grad():
        for columns in lockstep(loader, ctx, until="all_done"):
            if columns is None:  # this rank is done; the others still need its collectives
                model(_dummy_batch(ctx.device))
                continue
            batch = to_batch(columns, ctx.device)
            loss, (_, logits, labels) = model(batch)
            loss_sum += float(loss) * batch.batch_size  # per-batch mean -> sum over rows
            rows += batch.batch_size
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


def train(config: TwoTowerTrainConfig) -> dict[str, Any]:
    """Train the two-tower model on this rank; return rank 0's result on every rank.

    Returns a dictionary with ``history`` (per-epoch ``train_loss``, ``val_loss``,
    ``val_auc``, ``train_samples_per_s``), ``train_samples_per_s`` (rows per second over
    all training steps of all ranks), ``epochs``, ``world_size``, ``global_batch_size``,
    ``n_train_rows_seen`` and ``checkpoint_path`` (written by rank 0).
    """
    ctx = init_distributed(config.use_gpu)
    try:
        seed_everything(config.seed)
        model, optimizer, plan = build_sharded_model(config, ctx)
        train_loader = _loader(
            config.train, config, batch_size=config.batch_size, shuffle=True, split="train"
        )
        val_loader = _loader(
            config.validation,
            config,
            batch_size=config.eval_batch_size,
            shuffle=False,
            split="validation",
        )
        history: dict[str, list[float]] = {
            "train_loss": [],
            "val_loss": [],
            "val_auc": [],
            "train_samples_per_s": [],
        }
        total_rows, total_seconds = 0.0, 0.0
        for epoch in range(1, config.epochs + 1):
            model.train()
            loss_sum, rows = 0.0, 0
            bar = tqdm(
                lockstep(train_loader, ctx, until="any_done"),
                total=len(train_loader) if hasattr(train_loader, "__len__") else None,
                desc=f"epoch {epoch}/{config.epochs}",
                disable=not (ctx.is_main and config.progress),
                leave=False,
                mininterval=2.0,
            )
            start = time.perf_counter()
            for columns in bar:
                batch = to_batch(columns, ctx.device)
                loss = float(train_step(model, optimizer, batch))
                loss_sum += loss * batch.batch_size
                rows += batch.batch_size
                if ctx.is_main and config.progress:
                    bar.set_postfix(loss=f"{loss:.4f}")
            seconds = time.perf_counter() - start
            g_loss, g_rows, g_seconds = all_reduce_sum([loss_sum, float(rows), seconds], ctx.device)
            epoch_seconds = g_seconds / ctx.world_size  # ranks run in lock-step
            if g_rows == 0:
                raise RuntimeError(
                    "the training split yielded no full batch on some rank: lower "
                    "training.batch_size or use fewer processes"
                )
            val = _evaluate(model, val_loader, ctx)
            history["train_loss"].append(g_loss / g_rows)
            history["val_loss"].append(val["loss"])
            history["val_auc"].append(val["auc"])
            history["train_samples_per_s"].append(g_rows / max(epoch_seconds, 1e-9))
            total_rows += g_rows
            total_seconds += epoch_seconds
            if ctx.is_main:
                logger.info(
                    "epoch %d/%d: train_loss=%.4f val_loss=%.4f val_auc=%.4f (%.0f rows/s)",
                    epoch,
                    config.epochs,
                    history["train_loss"][-1],
                    val["loss"],
                    val["auc"],
                    history["train_samples_per_s"][-1],
                )
            if not math.isfinite(history["train_loss"][-1]):
                raise FloatingPointError(
                    f"training loss is {history['train_loss'][-1]} at epoch {epoch}: lower "
                    "training.embedding_lr / dense_lr or raise temperature"
                )

        state = gather_full_state_dict(model, ctx)
        if ctx.is_main:
            prefix = "two_tower."
            tower_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            with fsspec.open(config.checkpoint_path, "wb", auto_mkdir=True) as f:
                torch.save(make_checkpoint(config.model, tower_state), f)
        result = {
            "history": history,
            "train_samples_per_s": total_rows / max(total_seconds, 1e-9),
            "epochs": config.epochs,
            "world_size": ctx.world_size,
            "global_batch_size": config.batch_size * ctx.world_size,
            "n_train_rows_seen": int(total_rows),
            "checkpoint_path": config.checkpoint_path,
            "device": ctx.device.type,
            "sharding": describe_plan(plan),
        }
        return broadcast_from_main(result if ctx.is_main else None)
    finally:
        destroy_distributed()
