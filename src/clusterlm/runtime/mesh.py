"""A validated `ParallelPlan` → the `DeviceMesh` its parallelisms are applied on.

The mesh has named dimensions ("dp_replicate", "dp_shard", "tp"), size-1 ones included, so the
parallelizer can always ask for `mesh["tp"]` or `mesh["dp_replicate", "dp_shard"]`. One process
has no process group and no mesh: a plan of world size 1 needs none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from clusterlm.config.parallel import MESH_DIMS, ParallelPlan
from clusterlm.errors import DistributedError


def build_mesh(plan: ParallelPlan, device_type: str) -> DeviceMesh:
    """The 3-D mesh of `plan` over the ranks of the default process group."""
    return init_device_mesh(device_type, (plan.dp_replicate, plan.dp_shard, plan.tp), mesh_dim_names=MESH_DIMS)


@dataclass(frozen=True)
class Layout:
    """This rank's view of the plan: the plan, the mesh (None for one process) and its data shard."""

    plan: ParallelPlan
    mesh: Any = None  # DeviceMesh
    rank: int = 0

    @property
    def dp_rank(self) -> int:
        return self.plan.dp_rank(self.rank)

    @property
    def dp_size(self) -> int:
        return self.plan.dp


def make_layout(plan: ParallelPlan, rank: int, world_size: int, device_type: str) -> Layout:
    if plan.world_size != world_size:
        raise DistributedError(f"the plan ({plan.describe()}) is for {plan.world_size} processes, "
                               f"but {world_size} were started")
    mesh = build_mesh(plan, device_type) if world_size > 1 else None
    return Layout(plan, mesh, rank)
