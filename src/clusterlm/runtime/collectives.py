"""The few collectives the training loop itself needs, on CPU scalars over a gloo group.

Metric means, the slowest rank's step time, one stop decision for all ranks, barriers and
small broadcasts (a precision choice measured on rank 0). With one process every call is the
identity, so the loop never asks whether it is distributed. A CPU (gloo) group is used even when
the model's collectives run on NCCL, so these never wait on the accelerator's stream.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

# Stop reasons in increasing precedence when ranks disagree (None: keep training).
STOP_REASONS = (None, "max_steps", "early_stopping", "max_minutes", "interrupted")


class Collectives:
    def __init__(self, rank: int = 0, world_size: int = 1, group: Any = None) -> None:
        self.rank = rank
        self.world_size = world_size
        self.group = group  # None with several processes: the default group (gloo on CPU runs)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _reduce(self, value: float, op: Any) -> float:
        if self.world_size == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t, op=op, group=self.group)
        return float(t.item())

    def reduce_sum(self, value: float) -> float:
        return self._reduce(value, dist.ReduceOp.SUM)

    def reduce_mean(self, value: float) -> float:
        return self.reduce_sum(value) / self.world_size

    def reduce_max(self, value: float) -> float:
        return self._reduce(value, dist.ReduceOp.MAX)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier(group=self.group)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank `src`'s Python object on every rank (small control data only)."""
        if self.world_size == 1:
            return obj
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src, group=self.group)
        return box[0]

    def decide_on_main(self, decide: Any) -> Any:
        """Call `decide()` on rank 0 only and give every rank its result, so a choice that depends on
        timing or on the local machine (precision `auto`, a measured peak) is the same everywhere."""
        return self.broadcast_object(decide() if self.is_main else None)

    def agree_stop(self, stop_reason: str | None) -> str | None:
        """The stop decision every rank takes: a signal or a time budget may reach ranks at different
        steps, and stopping alone would leave the others waiting in a collective. The highest-ranked
        reason wins everywhere."""
        code = STOP_REASONS.index(stop_reason) if stop_reason in STOP_REASONS else len(STOP_REASONS) - 1
        return STOP_REASONS[int(self.reduce_max(code))]
