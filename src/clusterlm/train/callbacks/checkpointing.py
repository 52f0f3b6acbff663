"""Checkpoints of a training run: every `train.ckpt_every` steps, at the end, and on interrupts.

Everything an exact resume needs besides the weights — optimizer, schedule, loader position,
RNGs, counters — is saved with them (`Trainer.stateful`). A KeyboardInterrupt inside a step
(a second Ctrl-C) saves the state from the *start* of that step: the loader and RNG are rewound
to a snapshot taken before it, so the resumed run redoes the step exactly. An interrupt while
the weights are being updated cannot be rewound; then the previous checkpoint stays the latest.
Time spent saving is not training time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clusterlm.train.callbacks.base import Callback

if TYPE_CHECKING:
    from clusterlm.train.trainer import Trainer


class _Snapshot:
    """A frozen state dict posing as a Stateful (loader/RNG state as of the step's start)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state

    def load_state_dict(self, state: dict[str, Any]) -> None:  # pragma: no cover - never loaded
        self._state = state


class CheckpointCallback(Callback):
    def __init__(self) -> None:
        self.last: Path | None = None  # the newest checkpoint written or resumed from
        self._at_step_start: dict[str, _Snapshot] = {}

    def on_run_start(self, trainer: Trainer) -> None:
        self.last = trainer.resumed_from

    def on_step_start(self, trainer: Trainer) -> None:
        self._at_step_start = {"loader": _Snapshot(trainer.loader.state_dict()),
                               "rng": _Snapshot(trainer.rng.state_dict())}

    def on_step_committed(self, trainer: Trainer, stop_reason: str | None) -> None:
        if trainer.state.step % trainer.tcfg.ckpt_every == 0 and stop_reason is None:
            t0 = time.perf_counter()
            self.save(trainer)
            trainer.state.elapsed_s += time.perf_counter() - t0

    def on_interrupt(self, trainer: Trainer) -> None:
        step = trainer.state.step
        if trainer.runner.updating:  # weights half-updated: keep the previous checkpoint as the latest
            trainer.say(f"interrupted during the update of step {step}; the last checkpoint is {trainer.ckpt.latest()}")
            return
        trainer.optimizer.zero_grad(set_to_none=True)
        self.save(trainer, rewind=True)
        trainer.say(f"interrupted at step {step}; checkpoint {self.last}; run the same command again to resume")

    def on_run_end(self, trainer: Trainer, stop_reason: str) -> None:
        if stop_reason != "already_complete":
            self.save(trainer)

    def on_close(self, trainer: Trainer) -> None:
        trainer.ckpt.wait()  # an asynchronous checkpoint still being written

    def save(self, trainer: Trainer, rewind: bool = False) -> Path:
        states = {**trainer.stateful(), **(self._at_step_start if rewind else {})}
        state, c = trainer.state, trainer.components
        meta = {
            "tokens_seen": state.tokens_seen,
            "dataset_dir": str(Path(c.dataset.path).resolve()),
            "val_loss": state.last_val_loss,
            "config": trainer.cfg.model_copy(update={"model": c.model_cfg}).model_dump(mode="json"),
        }
        self.last = trainer.ckpt.save(state.step, c.model, c.model_cfg, Path(c.dataset.tokenizer_path), meta, states)
        return self.last
