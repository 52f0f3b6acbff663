"""The non-finite policy: a step whose loss or gradient norm is NaN/inf changes nothing (the
update is skipped in `step.py`) and is counted; after `train.max_nonfinite` such steps the run
stops with a `TrainingError` (exit 1), saving a checkpoint first when the weights are finite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from clusterlm.errors import TrainingError
from clusterlm.train.callbacks.base import Callback

if TYPE_CHECKING:
    from clusterlm.train.step import StepResult
    from clusterlm.train.trainer import Trainer


class NonFiniteCallback(Callback):
    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if result.finite:
            return
        state = trainer.state
        state.nonfinite_steps += 1
        if state.nonfinite_steps < trainer.tcfg.max_nonfinite:
            return
        finite_weights = all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())
        # Skipped steps never touched the weights, so they are still a usable model.
        where = trainer.save_checkpoint() if finite_weights else trainer.ckpt.latest()
        trainer.finish_logs("nonfinite")
        ckpt = f"last checkpoint: {where}" if where is not None else "no checkpoint was written"
        raise TrainingError(
            f"stopped at step {state.step}: {state.nonfinite_steps} steps had a non-finite loss or gradient "
            f"(train.max_nonfinite={trainer.tcfg.max_nonfinite}); {ckpt}; lower train.lr or check the data"
        )
