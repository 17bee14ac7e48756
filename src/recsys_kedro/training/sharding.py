"""The sharded model: TorchRec's planner and ``DistributedModelParallel`` over a spec's train
task, the fused and dense optimizers, and a rank's local copy of its own shards."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from recsys_kedro.training.config import ModelSpec, TrainConfig
from recsys_kedro.training.distributed import DistContext

logger = logging.getLogger(__name__)


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
