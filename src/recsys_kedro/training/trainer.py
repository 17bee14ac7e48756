"""One distributed training loop for every TorchRec model: ``fit(spec, config) -> result``.

Launched once per rank by ``TorchDistributor`` (:func:`recsys_kedro.training.launch.launch`)
or any torchrun-style launcher. What is specific to a model is a small :class:`ModelSpec`:
which columns make its batch, how to build its train task (the ``nn.Module`` that owns the
loss) and what its checkpoint holds. Everything else lives here, once:

* the process group (gloo on CPU, nccl on GPU) and seeding;
* each rank's :class:`~recsys_kedro.mds.block_loader.BlockBatchLoader` (or Mosaic's loader for
  the row layout), turned into TorchRec ``Batch`` es;
* fused row-wise Adagrad on every embedding table (applied in the backward pass), the
  planner's sharding plan given to ``DistributedModelParallel``, Adam on the dense part;
* lock-step batches across ranks, a rank-0 progress bar, per-epoch validation loss and AUC,
  plus any metrics of the spec's own validator (e.g. full-catalogue Recall@K / NDCG@K for a
  retrieval model, computed on rank 0 from the gathered weights);
* the best epoch kept (``spec.monitor``) with optional early stopping: each rank keeps a copy
  of its own shards, so no gather is needed during training;
* rank 0 gathers the sharded tables once and writes the checkpoint; every rank returns rank
  0's result (TorchDistributor returns an arbitrary rank's value).

On GPU, TorchRec's ``TrainPipelineSparseDist`` drives the training steps (it overlaps the
next batch's copy and sparse all-to-all with the current step's compute); on CPU there is
nothing to overlap and the plain loop runs (``train_pipeline`` chooses).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from recsys_kedro.mds import MDSFolder
from recsys_kedro.models.batch import Batch, BatchLayout, batch_size
from recsys_kedro.models.checkpoint import save_checkpoint
from recsys_kedro.quiet import silence_known_noise
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

TRAIN_PIPELINES = ("auto", "plain", "sparse_dist")


@runtime_checkable
class ModelSpec(Protocol):
    """What the shared loop needs to know about a model (picklable: it crosses into the ranks).

    Attributes:
        name: The model's name, in logs and errors (e.g. ``"dlrm"``).
        layout: Which loader columns make its :class:`Batch`.
        monitor: The per-epoch history key that selects the epoch to keep (``"val_auc"``,
            ``"val_loss"``), or ``None`` to keep the last epoch.
        monitor_mode: ``"max"`` or ``"min"``.
    """

    name: str
    layout: BatchLayout
    monitor: str | None
    monitor_mode: str

    # Optional members (looked up with getattr, so simple specs need not define them):
    #   report_val_loss: bool = True. False drops ``val_loss`` from the history, for a loss
    #     that is not comparable between training and validation (an in-batch softmax
    #     depends on the batch size and on which rows share a batch).
    #   make_validator(train, validation) -> Validator | None: called once, on rank 0; the
    #     validator's metrics join the per-epoch history (and can be the monitor).

    def build_task(self, device: torch.device) -> nn.Module:
        """The train task: embedding collections on the ``meta`` device (the sharder allocates
        each shard on its rank), every dense parameter initialised on ``device``.
        ``forward(batch) -> (loss (), (loss detached (), logits (B,), labels (B,)))``."""
        ...

    def checkpoint(self, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The checkpoint to save, from the task's full (gathered) state dict."""
        ...


@runtime_checkable
class Validator(Protocol):
    """Per-epoch validation metrics computed on rank 0 from the full (gathered) state dict
    of the train task, e.g. ``{"val_ndcg@10": 0.12}``. Keys must start with ``val_``."""

    def __call__(self, state_dict: dict[str, torch.Tensor]) -> dict[str, float]: ...


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the model-independent half; picklable).

    ``batch_size`` is per rank; the global batch is ``batch_size * world_size``.
    ``patience``: stop after that many epochs without improvement of ``spec.monitor``
    (``None``: run every epoch; the best epoch is kept either way).
    ``train_pipeline``: ``auto`` (``sparse_dist`` on GPU, ``plain`` on CPU), ``plain`` or
    ``sparse_dist`` (TorchRec's ``TrainPipelineSparseDist``).
    """

    train: MDSFolder
    validation: MDSFolder
    checkpoint_path: str
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
    patience: int | None = None
    train_pipeline: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("embedding_lr", "dense_lr"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.patience is not None and int(self.patience) < 1:
            raise ValueError(f"patience must be >= 1 or null, got {self.patience}")
        if self.train_pipeline not in TRAIN_PIPELINES:
            raise ValueError(
                f"train_pipeline must be one of {TRAIN_PIPELINES}, got {self.train_pipeline!r}"
            )


# --------------------------------------------------------------------------- input


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


def _batches(
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


# --------------------------------------------------------------------------- model


def embedding_modules(task: nn.Module) -> list[nn.Module]:
    """The task's embedding collections: they get the fused row-wise Adagrad."""
    from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

    kinds = (EmbeddingBagCollection, EmbeddingCollection)
    return [m for m in task.modules() if isinstance(m, kinds)]


def _table_configs(module: nn.Module) -> list:
    if hasattr(module, "embedding_bag_configs"):
        return list(module.embedding_bag_configs())
    return list(module.embedding_configs())


def build_sharded_model(spec: ModelSpec, config: TrainConfig, ctx: DistContext):
    """The DMP-wrapped train task, its combined optimizer and the sharding plan (collective)."""
    import torch.distributed as dist
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner
    from torchrec.distributed.planner.types import (
        KernelConfig,
        ParameterConstraints,
        TopologyFactory,
        TrainerConfig,
    )
    from torchrec.distributed.sharding_plan import get_default_sharders
    from torchrec.distributed.types import ShardingType
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter
    from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

    task = spec.build_task(ctx.device)
    tables = embedding_modules(task)
    assert tables, f"the {spec.name} train task has no embedding collection to shard"
    # Fused row-wise Adagrad, applied inside the backward pass of the sharded tables.
    for module in tables:
        apply_optimizer_in_backward(
            RowWiseAdagrad, module.parameters(), {"lr": config.embedding_lr}
        )
    topology = TopologyFactory.create_topology(
        TrainerConfig(world_size=ctx.world_size, local_world_size=ctx.local_world_size),
        kernel_config=KernelConfig(compute_device=ctx.device.type),
    )
    # Only sharded placements: a replicated (data_parallel) table is not updated by the fused
    # optimizer but by the dense one, i.e. Adam at dense_lr instead of row-wise Adagrad.
    kinds = (ShardingType.TABLE_WISE, ShardingType.ROW_WISE, ShardingType.COLUMN_WISE)
    sharded = [t.value for t in (*kinds, ShardingType.TABLE_ROW_WISE)]
    constraints = {
        table.name: ParameterConstraints(sharding_types=sharded)
        for module in tables
        for table in _table_configs(module)
    }
    planner = EmbeddingShardingPlanner(
        topology=topology, batch_size=config.batch_size, constraints=constraints
    )
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


def snapshot_local_state(model: nn.Module) -> dict[str, Any]:
    """A copy of this rank's part of the model: its own shards of each table, the dense
    parameters. No communication; restored with :func:`restore_local_state`."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    out: dict[str, Any] = {}
    for key, value in model.state_dict().items():
        if isinstance(value, ShardedTensor):
            out[key] = [shard.tensor.detach().clone() for shard in value.local_shards()]
        else:
            out[key] = value.detach().clone()
    return out


def restore_local_state(model: nn.Module, snapshot: dict[str, Any]) -> None:
    """Write :func:`snapshot_local_state`'s copy back into the model's own storage."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    with torch.no_grad():
        for key, value in model.state_dict().items():
            if isinstance(value, ShardedTensor):
                for shard, saved in zip(value.local_shards(), snapshot[key], strict=True):
                    shard.tensor.copy_(saved)
            else:
                value.copy_(snapshot[key])


# --------------------------------------------------------------------------- steps


def train_step(model: nn.Module, optimizer, batch: Batch) -> torch.Tensor:
    """One optimisation step; returns the detached loss. (Fused embedding updates happen in
    the backward pass; ``optimizer.step`` updates the dense part.)"""
    optimizer.zero_grad()
    loss, _ = model(batch)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _use_sparse_dist(config: TrainConfig, ctx: DistContext) -> bool:
    if config.train_pipeline == "auto":
        return ctx.device.type == "cuda"
    return config.train_pipeline == "sparse_dist"


def _train_epoch(
    model: nn.Module,
    optimizer,
    batches: Iterator[Batch | None],
    ctx: DistContext,
    config: TrainConfig,
    bar: tqdm,
) -> tuple[float, int]:
    """One epoch of training steps; returns (sum of per-row losses, rows) of this rank."""
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    rows = 0
    if _use_sparse_dist(config, ctx):
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
                bar.update(1)
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
            bar.update(1)
            if bar.n % 50 == 0 and not bar.disable:
                # refresh=False: shown at the bar's next (rate-limited) redraw, not now.
                bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
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
        for cpu_batch in _batches(loader, layout, ctx, until="all_done"):
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


def _show_epoch_lines(ctx: DistContext) -> None:
    """Rank 0's per-epoch line reaches the console: a rank started by TorchDistributor is a
    fresh process whose logging is not configured for INFO (torchrun's own handlers do not
    pass it on), so this module's logger gets its own handler on rank 0."""
    if ctx.is_main and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _on_main(fn, ctx: DistContext):
    """``fn()`` on rank 0, its result broadcast to every rank. If it raises, every rank
    raises (rank 0 the original error), so no rank is left waiting in a collective."""
    outcome: tuple[bool, Any] | None = None
    error: BaseException | None = None
    if ctx.is_main:
        try:
            outcome = (True, fn())
        except Exception as exc:  # re-raised below, after the other ranks are told
            error = exc
            outcome = (False, f"{type(exc).__name__}: {exc}")
    ok, value = broadcast_from_main(outcome)
    if error is not None:
        raise error
    if not ok:
        raise RuntimeError(f"rank 0 failed: {value}")
    return value


def _make_validator(spec: ModelSpec, config: TrainConfig) -> Validator | None:
    make = getattr(spec, "make_validator", None)
    return None if make is None else make(config.train, config.validation)


def _run_validator(
    validator: Validator | None, model: nn.Module, ctx: DistContext
) -> dict[str, float]:
    """The validator's metrics on every rank: the tables are gathered (a collective), rank 0
    computes, the result is broadcast. The gather costs one copy of the model on rank 0."""
    state = gather_full_state_dict(model, ctx)

    def compute() -> dict[str, float]:
        assert validator is not None
        metrics = {k: float(v) for k, v in validator(state).items()}
        bad = [k for k in metrics if not k.startswith("val_")]
        if bad:
            raise ValueError(f"validator metric names must start with 'val_', got {bad}")
        return metrics

    return _on_main(compute, ctx)


def _improved(value: float, best: float | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


# --------------------------------------------------------------------------- fit


def fit(spec: ModelSpec, config: TrainConfig) -> dict[str, Any]:
    """Train ``spec``'s model on this rank; return rank 0's result on every rank.

    Returns a dictionary with ``history`` (per-epoch ``train_loss``, ``val_loss`` unless the
    spec drops it, ``val_auc``, ``train_samples_per_s`` and the spec validator's metrics),
    ``best_epoch`` (the epoch whose weights were
    saved), ``epochs`` (epochs run), ``stopped_early``, ``train_samples_per_s`` (rows per
    second over all training steps of all ranks), ``world_size``, ``global_batch_size``,
    ``n_train_rows_seen``, ``device``, ``train_pipeline``, ``sharding`` (table -> placement)
    and ``checkpoint_path`` (written by rank 0).
    """
    if spec.monitor_mode not in ("max", "min"):
        raise ValueError(f"monitor_mode must be 'max' or 'min', got {spec.monitor_mode!r}")
    silence_known_noise()  # a fresh rank process: TorchRec's known deprecation notes
    ctx = init_distributed(config.use_gpu)
    _show_epoch_lines(ctx)
    try:
        seed_everything(config.seed)
        model, optimizer, plan = build_sharded_model(spec, config, ctx)
        layout = spec.layout
        # The layout's sampled features (uniform negatives): a stream per rank, seeded.
        sampler = torch.Generator().manual_seed(config.seed * 1_000_003 + ctx.rank)
        train_loader = make_loader(config.train, layout, config, train=True, split="train")
        val_loader = make_loader(config.validation, layout, config, train=False, split="validation")
        report_val_loss = bool(getattr(spec, "report_val_loss", True))
        history: dict[str, list[float]] = {"train_loss": []}
        if report_val_loss:
            history["val_loss"] = []
        history["val_auc"] = []
        history["train_samples_per_s"] = []
        validator: Validator | None = None

        def make() -> bool:
            nonlocal validator
            validator = _make_validator(spec, config)
            return validator is not None

        has_validator = _on_main(make, ctx)
        best: tuple[float | None, int, dict[str, Any] | None] = (None, 0, None)
        total_rows, total_seconds, stale = 0.0, 0.0, 0
        stopped_early = False
        for epoch in range(1, config.epochs + 1):
            model.train()
            bar = tqdm(
                total=steps_per_epoch(config.train, train_loader, config, ctx.world_size),
                desc=f"{spec.name} epoch {epoch}/{config.epochs}",
                unit="batch",
                disable=not (ctx.is_main and config.progress),
                leave=False,
                # A log file gets a line per redraw: redraw rarely there.
                mininterval=2.0 if sys.stderr.isatty() else 30.0,
            )
            start = time.perf_counter()
            batches = _batches(train_loader, layout, ctx, until="any_done", generator=sampler)
            loss_sum, rows = _train_epoch(model, optimizer, batches, ctx, config, bar)
            seconds = time.perf_counter() - start
            bar.close()
            g_loss, g_rows, g_seconds = all_reduce_sum([loss_sum, float(rows), seconds], ctx.device)
            epoch_seconds = g_seconds / ctx.world_size  # ranks run in lock-step
            if g_rows == 0:
                raise RuntimeError(
                    f"the training split yielded no full batch of {config.batch_size} rows on "
                    f"some of the {ctx.world_size} ranks: lower the batch size or use fewer "
                    "processes"
                )
            val = evaluate(model, val_loader, layout, ctx)
            history["train_loss"].append(g_loss / g_rows)
            if report_val_loss:
                history["val_loss"].append(val["loss"])
            history["val_auc"].append(val["auc"])
            history["train_samples_per_s"].append(g_rows / max(epoch_seconds, 1e-9))
            if has_validator:
                extra = _run_validator(validator, model, ctx)
                for key, value in extra.items():
                    history.setdefault(key, []).append(float(value))
            total_rows += g_rows
            total_seconds += epoch_seconds
            if ctx.is_main:
                shown = [k for k in history if k != "train_samples_per_s"]
                logger.info(
                    "%s epoch %d/%d: %s (%.0f rows/s)",
                    spec.name,
                    epoch,
                    config.epochs,
                    " ".join(f"{k}={history[k][-1]:.4f}" for k in shown),
                    history["train_samples_per_s"][-1],
                )
            if not math.isfinite(history["train_loss"][-1]):
                raise FloatingPointError(
                    f"{spec.name}: the training loss is {history['train_loss'][-1]} at epoch "
                    f"{epoch}: lower the learning rates"
                )
            if spec.monitor is None:
                continue
            if spec.monitor not in history:
                raise KeyError(
                    f"{spec.name}: the monitored metric {spec.monitor!r} is not computed; "
                    f"the per-epoch metrics are {sorted(history)}"
                )
            value = history[spec.monitor][-1]
            if _improved(value, best[0], spec.monitor_mode):
                # Every rank copies its own shards: nothing crosses the network.
                best = (value, epoch, snapshot_local_state(model))
                stale = 0
            else:
                stale += 1
                if config.patience is not None and stale >= config.patience:
                    stopped_early = epoch < config.epochs
                    if ctx.is_main:
                        logger.info(
                            "%s: no better %s for %d epoch(s); stopping after epoch %d, "
                            "keeping epoch %d",
                            spec.name,
                            spec.monitor,
                            stale,
                            epoch,
                            best[1],
                        )
                    break

        epochs_run = len(history["train_loss"])
        best_epoch = epochs_run
        if spec.monitor is not None and best[2] is not None:
            best_epoch = best[1]
            if best_epoch != epochs_run:
                restore_local_state(model, best[2])
        state = gather_full_state_dict(model, ctx)
        if ctx.is_main:
            save_checkpoint(spec.checkpoint(state), config.checkpoint_path)
        result = {
            "history": history,
            "best_epoch": best_epoch,
            "epochs": epochs_run,
            "stopped_early": stopped_early,
            "monitor": spec.monitor,
            "train_samples_per_s": total_rows / max(total_seconds, 1e-9),
            "world_size": ctx.world_size,
            "global_batch_size": config.batch_size * ctx.world_size,
            "n_train_rows_seen": int(total_rows),
            "checkpoint_path": config.checkpoint_path,
            "device": ctx.device.type,
            "train_pipeline": "sparse_dist" if _use_sparse_dist(config, ctx) else "plain",
            "sharding": describe_plan(plan),
        }
        return broadcast_from_main(result if ctx.is_main else None)
    finally:
        destroy_distributed()
