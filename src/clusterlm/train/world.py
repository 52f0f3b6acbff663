"""The process group a trainer runs in, reduced to what the training loop needs.

The single-process `World` here is the whole story for `clusterlm train` on one
CPU or GPU. A distributed launcher replaces it with an object of the same shape
(rank, world size, device, a mean over ranks, a barrier), so the loop itself never
imports `torch.distributed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
