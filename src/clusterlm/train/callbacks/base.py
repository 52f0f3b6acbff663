"""The hooks a training callback may implement; every one is a no-op by default.

    on_run_start → (on_step_start → step → on_step_end → stop decision → on_step_committed)*
                 → on_run_end → on_close (always, also after an error)

`on_step_end` runs before the ranks agree whether to stop (metrics, the non-finite policy,
validation); `on_step_committed` after it (a periodic checkpoint is skipped when the run is
about to stop, because the final one follows). `stop_reason` lets a callback end the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the trainer imports the callbacks
    from clusterlm.train.step import StepResult
    from clusterlm.train.trainer import Trainer


class Callback:
    def on_run_start(self, trainer: Trainer) -> None:
        """After setup, before the first step (also when the run is already complete)."""

    def on_step_start(self, trainer: Trainer) -> None:
        """Before each optimizer step."""

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        """After the step and the counters' update, before the stop decision."""

    def on_step_committed(self, trainer: Trainer, stop_reason: str | None) -> None:
        """After every rank agreed on `stop_reason` (None: training goes on)."""

    def on_interrupt(self, trainer: Trainer) -> None:
        """A KeyboardInterrupt arrived inside a step (it is re-raised afterwards)."""

    def on_run_end(self, trainer: Trainer, stop_reason: str) -> None:
        """The loop ended normally with `stop_reason`."""

    def on_close(self, trainer: Trainer) -> None:
        """Always, last: release what `on_run_start` took."""

    def stop_reason(self, trainer: Trainer) -> str | None:
        """A reason to stop now, or None."""
        return None
