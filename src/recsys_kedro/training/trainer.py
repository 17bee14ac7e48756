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

import gc
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from recsys_kedro.mds import MDSFolder
from recsys_kedro.models.batch import Batch, BatchLayout, batch_size
from recsys_kedro.models.checkpoint import save_checkpoint
from recsys_kedro.quiet import silence_known_noise
from recsys_kedro.training.checkpointing import CheckpointPolicy
from recsys_kedro.training.distributed import (
    DistContext,
    all_gather_arrays,
    all_reduce_sum,
    broadcast_from_main,
    destroy_distributed,
    gather_full_state_dict,
    init_distributed,
    lockstep,
    machine_local_ranks,
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
    ``checkpoints``: sharded checkpoints and resumption (``None``: neither).
    ``timeout_s``: the process group's timeout: a collective that waits longer for a rank (one
    that hangs, or died without its peers noticing) fails the run instead of hanging it.
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
    checkpoints: CheckpointPolicy | None = None
    timeout_s: float = 600.0

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
        if not float(self.timeout_s) > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.checkpoints is not None and self.train.layout != "block":
            raise ValueError(
                "training checkpoints need the block layout of the exported MDS folders (they "
                f"resume each rank's loader exactly), got layout {self.train.layout!r}"
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


StepHook = Callable[[int, torch.Tensor, int], None]


def _train_epoch(
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


# --------------------------------------------------------------------------- checkpoints


@dataclass
class _Loop:
    """The training loop's progress: what a checkpoint must carry besides the weights."""

    history: dict[str, list[float]]
    step: int = 0  # global training steps taken (every rank takes the same number)
    best_value: float | None = None
    best_epoch: int = 0
    best_checkpoint: str | None = None  # the folder name of the best epoch's checkpoint
    stale: int = 0
    total_rows: float = 0.0
    total_seconds: float = 0.0
    stopped_early: bool = False


class _StateTrail:
    """This rank's loader and sampler state after each batch it pulled, so that a checkpoint
    records the state after the last *trained* batch, also when a train pipeline has pulled
    batches ahead (``TrainPipelineSparseDist`` keeps some in flight)."""

    def __init__(self, loader: Any, sampler: torch.Generator) -> None:
        self.loader = loader
        self.sampler = sampler
        self.states: deque[tuple[int, dict[str, Any], torch.Tensor]] = deque()
        self.pulled = 0

    def wrap(self, batches: Iterator[Batch | None]) -> Iterator[Batch | None]:
        self.states.clear()
        self.pulled = 0
        for batch in batches:
            self.pulled += 1
            self.states.append((self.pulled, self.loader.state_dict(), self.sampler.get_state()))
            yield batch

    def after(self, steps: int) -> tuple[dict[str, Any], torch.Tensor]:
        """The state after the ``steps``-th batch of this epoch (older ones are dropped)."""
        while self.states and self.states[0][0] < steps:
            self.states.popleft()
        if not self.states or self.states[0][0] != steps:
            raise RuntimeError(f"no loader state recorded after batch {steps}")
        _, loader_state, sampler_state = self.states[0]
        return loader_state, sampler_state


class _Checkpointer:
    """Sharded checkpoints of one run (:mod:`recsys_kedro.training.checkpointing`)."""

    def __init__(
        self,
        policy: CheckpointPolicy,
        model: nn.Module,
        optimizer: Any,
        loader: Any,
        sampler: torch.Generator,
        ctx: DistContext,
        config: TrainConfig,
    ) -> None:
        self.policy = policy
        self.model = model
        self.optimizer = optimizer
        self.loader = loader
        self.sampler = sampler
        self.ctx = ctx
        self.batch_size = config.batch_size
        self.trail = _StateTrail(loader, sampler)
        self.saved = 0
        self.restored_from: str | None = None

    def due(self, step: int) -> bool:
        every = self.policy.every_n_steps
        return every is not None and step % int(every) == 0

    def save(
        self,
        loop: _Loop,
        *,
        epoch: int,
        step_in_epoch: int,
        partial: tuple[float, int, float],
        loader_state: dict[str, Any],
        sampler_state: torch.Tensor,
        epoch_end: bool = False,
    ) -> None:
        """A checkpoint after ``loop.step`` (a collective). ``partial``: this rank's loss sum,
        rows and seconds of the epoch so far (zeros at an epoch's end)."""
        from recsys_kedro.training.checkpointing import (
            encode_tensor,
            prune,
            save_checkpoint,
            step_path,
        )

        local = {
            "loader": loader_state,
            "sampler": encode_tensor(sampler_state),
            "loss_sum": float(partial[0]),
            "rows": int(partial[1]),
            "seconds": float(partial[2]),
        }
        ranks: list[Any] = [None] * self.ctx.world_size
        torch.distributed.all_gather_object(ranks, local)
        state = {
            **asdict(loop),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "world_size": self.ctx.world_size,
            "batch_size": self.batch_size,
            "ranks": ranks,
        }
        path = step_path(self.policy.directory, loop.step, epoch_end=epoch_end)
        save_checkpoint(path, self.model, self.optimizer, state)
        self.saved += 1
        if self.ctx.is_main:
            protect = {self.path(loop.best_checkpoint)} if loop.best_checkpoint else set()
            prune(self.policy.directory, int(self.policy.keep_last), protect)

    def path(self, name: str) -> str:
        return f"{self.policy.directory.rstrip('/')}/{name}"

    def epoch_end_name(self, loop: _Loop) -> str:
        """The folder name (relative: the folder can move) of this step's epoch-end save."""
        from recsys_kedro.training.checkpointing import step_path

        return step_path(self.policy.directory, loop.step, epoch_end=True).rsplit("/", 1)[-1]

    def at_epoch_end(self, loop: _Loop, epoch: int) -> None:
        # The next epoch starts from its first row on every rank (lock-step ended this one).
        self.loader.end_epoch()
        self.save(
            loop,
            epoch=epoch + 1,
            step_in_epoch=0,
            partial=(0.0, 0, 0.0),
            loader_state=self.loader.state_dict(),
            sampler_state=self.sampler.get_state(),
            epoch_end=True,
        )

    def restore(self) -> tuple[_Loop, int, int, tuple[float, int, float]] | None:
        """Load the newest complete checkpoint, if any (a collective). Returns the loop's
        progress, the epoch to continue, the steps of it already taken and this rank's partial
        sums of it; the loader and sampler are set to continue exactly after that step."""
        from recsys_kedro.training.checkpointing import (
            decode_tensor,
            latest_complete,
            load_checkpoint,
            remove_partial,
        )

        directory = self.policy.directory

        def find() -> str | None:
            found = latest_complete(directory)
            for path in remove_partial(directory):  # left by a rank that died while saving
                logger.info("deleted the partial checkpoint %s", path)
            return found

        path = _on_main(find, self.ctx)
        if path is None:
            return None
        state = load_checkpoint(path, self.model, self.optimizer)
        for key, mine in (("world_size", self.ctx.world_size), ("batch_size", self.batch_size)):
            if state[key] != mine:
                raise ValueError(
                    f"cannot resume from {path}: it was written with {key}={state[key]}, this "
                    f"run has {key}={mine}; use the same setting, or resume=false to start over"
                )
        # Each loader continues its own partition of the data: the state saved by the loader of
        # the same (Mosaic) rank, which differs from the process rank when ranks share
        # machines in cluster mode (see machine_local_ranks).
        mine = [s for s in state["ranks"] if s["loader"]["rank"] == self.loader.rank]
        local = mine[0] if mine else state["ranks"][self.ctx.rank]
        self.loader.load_state_dict(local["loader"])
        self.sampler.set_state(decode_tensor(local["sampler"]))
        loop = _Loop(**{f.name: state[f.name] for f in fields(_Loop)})
        if self.ctx.is_main:
            logger.info(
                "resuming from %s (epoch %d, %d step(s) into it)",
                path,
                state["epoch"],
                state["step_in_epoch"],
            )
        partial = (float(local["loss_sum"]), int(local["rows"]), float(local["seconds"]))
        self.restored_from = path
        return loop, int(state["epoch"]), int(state["step_in_epoch"]), partial

    def best_snapshot(self, loop: _Loop) -> dict[str, Any] | None:
        """This rank's copy of the best epoch's weights after a resume (they are in the
        checkpoint taken at that epoch's end, kept by pruning). A collective."""
        from recsys_kedro.training.checkpointing import load_model_weights

        if loop.best_checkpoint is None or self.restored_from is None:
            return None
        best = self.path(loop.best_checkpoint)
        if best == self.restored_from:
            return snapshot_local_state(self.model)
        load_model_weights(best, self.model)
        snapshot = snapshot_local_state(self.model)
        load_model_weights(self.restored_from, self.model)
        return snapshot


def _step_hook(
    loop: _Loop,
    checkpointer: _Checkpointer | None,
    epoch: int,
    done_before: int,
    seconds_before: float,
    start: float,
) -> StepHook:
    """Counts global steps and writes the every-N-steps checkpoints of one epoch.
    ``done_before``/``seconds_before``: the epoch's steps and seconds before a resume."""

    def on_step(steps: int, loss_sum: torch.Tensor, rows: int) -> None:
        loop.step += 1
        if checkpointer is None or not checkpointer.due(loop.step):
            return
        loader_state, sampler_state = checkpointer.trail.after(steps)
        checkpointer.save(
            loop,
            epoch=epoch,
            step_in_epoch=done_before + steps,
            partial=(float(loss_sum), rows, seconds_before + time.perf_counter() - start),
            loader_state=loader_state,
            sampler_state=sampler_state,
        )

    return on_step


# --------------------------------------------------------------------------- fit


def fit(spec: ModelSpec, config: TrainConfig) -> dict[str, Any]:
    """Train ``spec``'s model on this rank; return rank 0's result on every rank.

    Returns a dictionary with ``history`` (per-epoch ``train_loss``, ``val_loss`` unless the
    spec drops it, ``val_auc``, ``train_samples_per_s`` and the spec validator's metrics),
    ``best_epoch`` (the epoch whose weights were
    saved), ``epochs`` (epochs run), ``stopped_early``, ``train_samples_per_s`` (rows per
    second over all training steps of all ranks), ``world_size``, ``global_batch_size``,
    ``n_train_rows_seen``, ``device``, ``train_pipeline``, ``sharding`` (table -> placement),
    ``steps`` (global training steps), ``resumed_from_step`` (``None`` for a fresh start),
    ``checkpoints_saved`` and ``checkpoint_path`` (written by rank 0).

    With ``config.checkpoints``, a sharded checkpoint is written at every epoch's end and
    every ``every_n_steps`` steps, and a run started again with the same settings continues
    after the newest complete one: the remaining batches of the epoch are exactly those an
    uninterrupted run would have trained on, on every rank.
    """
    if spec.monitor_mode not in ("max", "min"):
        raise ValueError(f"monitor_mode must be 'max' or 'min', got {spec.monitor_mode!r}")
    silence_known_noise()  # a fresh rank process: TorchRec's known deprecation notes
    ctx = init_distributed(config.use_gpu, timeout_s=config.timeout_s)
    _show_epoch_lines(ctx)
    try:
        seed_everything(config.seed)
        model, optimizer, plan = build_sharded_model(spec, config, ctx)
        layout = spec.layout
        # The layout's sampled features (uniform negatives): a stream per rank, seeded.
        sampler = torch.Generator().manual_seed(config.seed * 1_000_003 + ctx.rank)
        with machine_local_ranks(ctx):  # Mosaic's view of which ranks share a machine
            train_loader = make_loader(config.train, layout, config, train=True, split="train")
            val_loader = make_loader(
                config.validation, layout, config, train=False, split="validation"
            )
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
        loop = _Loop(history=history)
        best_snapshot: dict[str, Any] | None = None
        checkpointer = None
        first_epoch, resumed_steps, partial = 1, 0, (0.0, 0, 0.0)
        resumed_from: int | None = None
        if config.checkpoints is not None:
            checkpointer = _Checkpointer(
                config.checkpoints, model, optimizer, train_loader, sampler, ctx, config
            )
            restored = checkpointer.restore() if config.checkpoints.resume else None
            if restored is not None:
                loop, first_epoch, resumed_steps, partial = restored
                resumed_from = loop.step
                best_snapshot = checkpointer.best_snapshot(loop)
        history = loop.history

        for epoch in range(first_epoch, config.epochs + 1):
            if loop.stopped_early:  # resumed after the run had already stopped early
                break
            model.train()
            bar = tqdm(
                total=steps_per_epoch(config.train, train_loader, config, ctx.world_size),
                initial=resumed_steps,
                desc=f"{spec.name} epoch {epoch}/{config.epochs}",
                unit="batch",
                disable=not (ctx.is_main and config.progress),
                leave=False,
                # A log file gets a line per redraw: redraw rarely there.
                mininterval=2.0 if sys.stderr.isatty() else 30.0,
            )
            start = time.perf_counter()
            done_before, (loss0, rows0, seconds0) = resumed_steps, partial
            resumed_steps, partial = 0, (0.0, 0, 0.0)
            batches = _batches(train_loader, layout, ctx, until="any_done", generator=sampler)
            if checkpointer is not None:
                batches = checkpointer.trail.wrap(batches)
            on_step = _step_hook(loop, checkpointer, epoch, done_before, seconds0, start)
            loss_sum, rows = _train_epoch(
                model, optimizer, batches, ctx, config, bar, on_step, start=(loss0, rows0)
            )
            seconds = seconds0 + time.perf_counter() - start
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
            loop.total_rows += g_rows
            loop.total_seconds += epoch_seconds
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
            improved = False
            if spec.monitor is not None:
                if spec.monitor not in history:
                    raise KeyError(
                        f"{spec.name}: the monitored metric {spec.monitor!r} is not computed; "
                        f"the per-epoch metrics are {sorted(history)}"
                    )
                value = history[spec.monitor][-1]
                improved = _improved(value, loop.best_value, spec.monitor_mode)
                if improved:
                    # Every rank copies its own shards: nothing crosses the network.
                    loop.best_value, loop.best_epoch, loop.stale = value, epoch, 0
                    best_snapshot = snapshot_local_state(model)
                    if checkpointer is not None:  # the checkpoint saved just below
                        loop.best_checkpoint = checkpointer.epoch_end_name(loop)
                else:
                    loop.stale += 1
                    if config.patience is not None and loop.stale >= config.patience:
                        loop.stopped_early = epoch < config.epochs
                        if ctx.is_main:
                            logger.info(
                                "%s: no better %s for %d epoch(s); stopping after epoch %d, "
                                "keeping epoch %d",
                                spec.name,
                                spec.monitor,
                                loop.stale,
                                epoch,
                                loop.best_epoch,
                            )
            if checkpointer is not None:
                checkpointer.at_epoch_end(loop, epoch)
            if loop.stopped_early:
                break

        epochs_run = len(history["train_loss"])
        best_epoch = epochs_run
        if spec.monitor is not None and best_snapshot is not None:
            best_epoch = loop.best_epoch
            if best_epoch != epochs_run:
                restore_local_state(model, best_snapshot)
        state = gather_full_state_dict(model, ctx)
        if ctx.is_main:
            save_checkpoint(spec.checkpoint(state), config.checkpoint_path)
        result = {
            "history": history,
            "best_epoch": best_epoch,
            "epochs": epochs_run,
            "stopped_early": loop.stopped_early,
            "monitor": spec.monitor,
            "train_samples_per_s": loop.total_rows / max(loop.total_seconds, 1e-9),
            "world_size": ctx.world_size,
            "global_batch_size": config.batch_size * ctx.world_size,
            "n_train_rows_seen": int(loop.total_rows),
            "steps": loop.step,
            "resumed_from_step": resumed_from,
            "checkpoints_saved": 0 if checkpointer is None else checkpointer.saved,
            "checkpoint_path": config.checkpoint_path,
            "device": ctx.device.type,
            "train_pipeline": "sparse_dist" if _use_sparse_dist(config, ctx) else "plain",
            "sharding": describe_plan(plan),
        }
        result = broadcast_from_main(result if ctx.is_main else None)
    except BaseException:
        # No goodbye barrier: the other ranks may be waiting in another collective, which
        # would then only fail at the timeout. Leaving closes this rank's connections, so
        # theirs fail at once and this rank's exception is the first one reported.
        destroy_distributed(wait_for_peers=False)
        raise
    destroy_distributed()
    # The sharded model keeps the process group's C++ objects alive through reference cycles:
    # freed only by the garbage collector at interpreter exit, they can abort the process
    # ("terminate called without an active exception", SIGABRT) after a successful run.
    # Free them now, while the interpreter is whole.
    del model, optimizer, train_loader, val_loader, checkpointer, best_snapshot
    gc.collect()
    return result
