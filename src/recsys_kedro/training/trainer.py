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

The pieces, by concern: :mod:`.config` (the spec contract and :class:`TrainConfig`),
:mod:`.steps` (loaders, a training epoch, validation), :mod:`.sharding` (planner, DMP,
optimizers, local snapshots), :mod:`.resume` (checkpoint timing and restore); this module is
the loop and the choice of the epoch to keep.
"""

from __future__ import annotations

import gc
import logging
import math
import sys
import time
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from recsys_kedro.mds.shared_memory import claimed_datasets
from recsys_kedro.models.model_file import save_model_file
from recsys_kedro.quiet import silence_known_noise
from recsys_kedro.training.config import (
    TRAIN_PIPELINES,
    ModelSpec,
    TrainConfig,
    Validator,
    check_spec,
)
from recsys_kedro.training.distributed import (
    DistContext,
    all_reduce_sum,
    broadcast_from_main,
    destroy_distributed,
    gather_full_state_dict,
    init_distributed,
    machine_local_ranks,
    on_main,
    seed_everything,
)
from recsys_kedro.training.resume import Checkpointer, LoopState, step_hook
from recsys_kedro.training.sharding import (
    build_sharded_model,
    describe_plan,
    restore_local_state,
    snapshot_local_state,
)
from recsys_kedro.training.steps import (
    batches,
    evaluate,
    make_loader,
    steps_per_epoch,
    train_epoch,
    use_sparse_dist,
)

__all__ = ["TRAIN_PIPELINES", "ModelSpec", "TrainConfig", "Validator", "fit"]

logger = logging.getLogger(__name__)


def fit(spec: ModelSpec, config: TrainConfig) -> dict[str, Any]:
    """Train ``spec``'s model on this rank; return rank 0's result on every rank.

    Returns a dictionary with ``history`` (per-epoch ``train_loss``, ``val_loss`` unless the
    spec drops it, ``val_auc``, ``train_samples_per_s`` and the spec validator's metrics),
    ``best_epoch`` (the epoch whose weights were
    saved), ``epochs`` (epochs run), ``stopped_early``, ``train_samples_per_s`` (rows per
    second over all training steps of all ranks), ``world_size``, ``global_batch_size``,
    ``n_train_rows_seen``, ``device``, ``train_pipeline``, ``sharding`` (table -> placement),
    ``steps`` (global training steps), ``resumed_from_step`` (``None`` for a fresh start),
    ``checkpoints_saved`` and ``model_path`` (written by rank 0).

    With ``config.checkpoints``, a sharded checkpoint is written at every epoch's end and
    every ``every_n_steps`` steps, and a run started again with the same settings continues
    after the newest complete one: the remaining batches of the epoch are exactly those an
    uninterrupted run would have trained on, on every rank.
    """
    check_spec(spec)
    silence_known_noise()  # a fresh rank process: TorchRec's known deprecation notes
    ctx = init_distributed(config.use_gpu, timeout_s=config.timeout_s)
    _show_epoch_lines(ctx)
    run: _RankRun | None = None
    try:
        run = _RankRun(spec, config, ctx)
        for epoch in range(run.first_epoch, config.epochs + 1):
            if run.loop.stopped_early:  # resumed after the run had already stopped early
                break
            run.train_epoch(epoch)
            run.validate(epoch)
            run.select(epoch)
            if run.checkpointer is not None:
                run.checkpointer.at_epoch_end(run.loop, epoch)
            if run.loop.stopped_early:
                break
        result = run.finish()
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
    del run
    gc.collect()
    return result


class _RankRun:
    """One rank's training run: the sharded model, its loaders and the loop's state, with
    one method per phase of an epoch (every one is a collective: all ranks call it)."""

    def __init__(self, spec: ModelSpec, config: TrainConfig, ctx: DistContext) -> None:
        self.spec, self.config, self.ctx = spec, config, ctx
        seed_everything(config.seed)
        self.model, self.optimizer, self.plan = build_sharded_model(spec, config, ctx)
        # The layout's sampled features (uniform negatives): a stream per rank, seeded.
        self.sampler = torch.Generator().manual_seed(config.seed * 1_000_003 + ctx.rank)
        # Mosaic's view of which ranks share a machine, and prefixes of this run's own.
        with (
            machine_local_ranks(ctx),
            claimed_datasets() as claim,
        ):
            self.train_loader = make_loader(
                config.train, spec.layout, config, train=True, split="train"
            )
            self.val_loader = make_loader(
                config.validation, spec.layout, config, train=False, split="validation"
            )
            claim.record([self.train_loader.dataset, self.val_loader.dataset])
        history: dict[str, list[float]] = {"train_loss": []}
        if spec.report_val_loss:
            history["val_loss"] = []
        history["val_auc"] = []
        history["train_samples_per_s"] = []
        self.validator: Validator | None = None

        def make() -> bool:
            self.validator = spec.make_validator(config.train, config.validation)
            return self.validator is not None

        self.has_validator = on_main(make, ctx)
        self.loop = LoopState(history=history)
        self.best_snapshot: dict[str, Any] | None = None
        self.checkpointer: Checkpointer | None = None
        self.first_epoch, self.resumed_steps, self.partial = 1, 0, (0.0, 0, 0.0)
        self.resumed_from: int | None = None
        if config.checkpoints is not None:
            self.checkpointer = Checkpointer(
                config.checkpoints, self.model, self.optimizer, self.train_loader,
                self.sampler, ctx, config,
            )  # fmt: skip
            restored = self.checkpointer.restore() if config.checkpoints.resume else None
            if restored is not None:
                self.loop, self.first_epoch, self.resumed_steps, self.partial = restored
                self.resumed_from = self.loop.step
                self.best_snapshot = self.checkpointer.best_snapshot(self.loop)

    @property
    def history(self) -> dict[str, list[float]]:
        return self.loop.history

    def train_epoch(self, epoch: int) -> None:
        """One epoch of training steps on every rank, continued after a resume; the epoch's
        mean loss and throughput join the history."""
        spec, config, ctx = self.spec, self.config, self.ctx
        self.model.train()
        bar = tqdm(
            total=steps_per_epoch(config.train, self.train_loader, config, ctx.world_size),
            initial=self.resumed_steps,
            desc=f"{spec.name} epoch {epoch}/{config.epochs}",
            unit="batch",
            disable=not (ctx.is_main and config.progress),
            leave=False,
            # A log file gets a line per redraw: redraw rarely there.
            mininterval=2.0 if sys.stderr.isatty() else 30.0,
        )
        start = time.perf_counter()
        done_before, (loss0, rows0, seconds0) = self.resumed_steps, self.partial
        self.resumed_steps, self.partial = 0, (0.0, 0, 0.0)
        rank_batches = batches(
            self.train_loader, spec.layout, ctx, until="any_done", generator=self.sampler
        )
        if self.checkpointer is not None:
            rank_batches = self.checkpointer.trail.wrap(rank_batches)
        on_step = step_hook(self.loop, self.checkpointer, epoch, done_before, seconds0, start)
        loss_sum, rows = train_epoch(
            self.model, self.optimizer, rank_batches, ctx, config, bar, on_step,
            start=(loss0, rows0),
        )  # fmt: skip
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
        self.history["train_loss"].append(g_loss / g_rows)
        self.history["train_samples_per_s"].append(g_rows / max(epoch_seconds, 1e-9))
        self.loop.total_rows += g_rows
        self.loop.total_seconds += epoch_seconds

    def validate(self, epoch: int) -> None:
        """Validation loss and AUC, and the spec validator's metrics, into the history."""
        spec, history = self.spec, self.history
        val = evaluate(self.model, self.val_loader, spec.layout, self.ctx)
        if spec.report_val_loss:
            history["val_loss"].append(val["loss"])
        history["val_auc"].append(val["auc"])
        if self.has_validator:
            for key, value in _run_validator(self.validator, self.model, self.ctx).items():
                history.setdefault(key, []).append(float(value))
        if self.ctx.is_main:
            shown = [k for k in history if k != "train_samples_per_s"]
            logger.info(
                "%s epoch %d/%d: %s (%.0f rows/s)",
                spec.name,
                epoch,
                self.config.epochs,
                " ".join(f"{k}={history[k][-1]:.4f}" for k in shown),
                history["train_samples_per_s"][-1],
            )
        if not math.isfinite(history["train_loss"][-1]):
            raise FloatingPointError(
                f"{spec.name}: the training loss is {history['train_loss'][-1]} at epoch "
                f"{epoch}: lower the learning rates"
            )

    def select(self, epoch: int) -> None:
        """Model selection and early stopping on ``spec.monitor``: a better epoch is copied
        (every rank its own shards: nothing crosses the network); ``patience`` epochs
        without one stop the run."""
        spec, loop = self.spec, self.loop
        if spec.monitor is None:
            return
        if spec.monitor not in self.history:
            raise KeyError(
                f"{spec.name}: the monitored metric {spec.monitor!r} is not computed; "
                f"the per-epoch metrics are {sorted(self.history)}"
            )
        value = self.history[spec.monitor][-1]
        if _improved(value, loop.best_value, spec.monitor_mode):
            loop.best_value, loop.best_epoch, loop.stale = value, epoch, 0
            self.best_snapshot = snapshot_local_state(self.model)
            if self.checkpointer is not None:  # the epoch-end checkpoint saved next
                loop.best_checkpoint = self.checkpointer.epoch_end_name(loop)
            return
        loop.stale += 1
        patience = self.config.patience
        if patience is not None and loop.stale >= patience:
            loop.stopped_early = epoch < self.config.epochs
            if self.ctx.is_main:
                logger.info(
                    "%s: no better %s for %d epoch(s); stopping after epoch %d, keeping epoch %d",
                    spec.name,
                    spec.monitor,
                    loop.stale,
                    epoch,
                    loop.best_epoch,
                )

    def finish(self) -> dict[str, Any]:
        """Restore the kept epoch, gather the model and write it (rank 0), remove the resume
        checkpoints unless they are to be kept; rank 0's summary on every rank."""
        spec, config, ctx, loop = self.spec, self.config, self.ctx, self.loop
        epochs_run = len(self.history["train_loss"])
        best_epoch = epochs_run
        if spec.monitor is not None and self.best_snapshot is not None:
            best_epoch = loop.best_epoch
            if best_epoch != epochs_run:
                restore_local_state(self.model, self.best_snapshot)
        state = gather_full_state_dict(self.model, ctx)
        if ctx.is_main:
            save_model_file(spec.model_file(state), config.model_path)
        result = {
            "history": self.history,
            "best_epoch": best_epoch,
            "epochs": epochs_run,
            "stopped_early": loop.stopped_early,
            "monitor": spec.monitor,
            "train_samples_per_s": loop.total_rows / max(loop.total_seconds, 1e-9),
            "world_size": ctx.world_size,
            "global_batch_size": config.batch_size * ctx.world_size,
            "n_train_rows_seen": int(loop.total_rows),
            "steps": loop.step,
            "resumed_from_step": self.resumed_from,
            "checkpoints_saved": 0 if self.checkpointer is None else self.checkpointer.saved,
            "model_path": config.model_path,
            "device": ctx.device.type,
            "train_pipeline": "sparse_dist" if use_sparse_dist(config, ctx) else "plain",
            "sharding": describe_plan(self.plan),
        }
        result = broadcast_from_main(result if ctx.is_main else None)
        if self.checkpointer is not None:
            self.checkpointer.after_success()
        return result


def _show_epoch_lines(ctx: DistContext) -> None:
    """Rank 0's per-epoch line reaches the console: a rank started by TorchDistributor is a
    fresh process whose logging is not configured for INFO (torchrun's own handlers do not
    pass it on), so the training package's logger gets its own handler on rank 0."""
    package = logging.getLogger("recsys_kedro.training")  # this module, resume, sharding
    if ctx.is_main and not package.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)
        package.propagate = False


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

    return on_main(compute, ctx)


def _improved(value: float, best: float | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best
