"""The process group a trainer runs in, reduced to what the training loop needs.

The single-process `World` here is the whole story for `clusterlm train` on one
CPU or GPU. A distributed launcher replaces it with an object of the same shape
(rank, world size, device, a mean over ranks, a barrier), so the loop itself never
imports `torch.distributed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # Data-parallel coordinates: the loader is sharded over these (tensor-parallel ranks
    # of one data-parallel group read the same batch). Equal to rank/world_size here.
    dp_rank: int = 0
    dp_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, plots and (for single-file checkpoints) the checkpoint."""
        return self.rank == 0

    def reduce_mean(self, value: float) -> float:
        """Mean of a scalar metric over ranks (identity for one process)."""
        return float(value)

    def reduce_sum(self, value: float) -> float:
        """Sum of a scalar over ranks (identity for one process)."""
        return float(value)

    def reduce_max(self, value: float) -> float:
        return float(value)

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""

    # -- hooks a distributed world (clusterlm.distributed.env.DistributedWorld) overrides --------
    def parallelize(self, model: Any, train_cfg: Any) -> Any:
        """Apply TP/AC/compile/FSDP/DDP to `model`; None: the single-process path in setup_model."""
        return None

    def checkpoint_backend(self) -> Any:
        """The checkpoint backend for this world; None: the single-process default."""
        return None

    def step_end(self, step_time_s: float) -> float:
        """Called once per optimizer step with this rank's step time; returns the step time all
        ranks agree on (a distributed world: the slowest rank's, and it collects comm stats)."""
        return step_time_s

    def agree(self, stop_reason: str | None) -> str | None:
        """The stop decision every rank takes (a distributed world: any rank's reason stops all)."""
        return stop_reason

    def comm_metrics(self) -> dict[str, Any]:
        """Communication figures since the last call, merged into the train log record."""
        return {}

    def comm_summary(self) -> dict[str, Any]:
        """Communication figures for the whole run, merged into the run summary."""
        return {}
