"""Each training callback on its own, against a stand-in trainer (the whole loop: test_trainer.py)."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest
import torch

from clusterlm.config.train import TrainConfig
from clusterlm.distributed.comm_stats import CommStep
from clusterlm.errors import TrainingError
from clusterlm.train.callbacks.checkpointing import CheckpointCallback
from clusterlm.train.callbacks.metrics import comm_average
from clusterlm.train.callbacks.nonfinite import NonFiniteCallback
from clusterlm.train.callbacks.signals import SignalCallback
from clusterlm.train.callbacks.validation import ValidationCallback
from clusterlm.train.state import TrainState
from clusterlm.train.step import StepResult


class StandIn(SimpleNamespace):
    """Just the trainer attributes the callbacks touch."""

    def __init__(self, **tcfg):
        super().__init__(tcfg=TrainConfig(**{"max_steps": 100, **tcfg}), state=TrainState(), said=[], logged=[],
                         saved=[], stop_requested=None, finished=None)
        self.model = torch.nn.Linear(2, 2)

    def request_stop(self, reason: str = "interrupted") -> None:
        self.stop_requested = reason

    def say(self, text: str) -> None:
        self.said.append(text)

    def save_checkpoint(self):
        self.saved.append(self.state.step)
        return f"ckpt-{self.state.step}"

    def finish_logs(self, reason: str) -> None:
        self.finished = reason


def test_signal_callback_turns_sigterm_into_a_clean_stop_and_restores_handlers():
    trainer, callback = StandIn(), SignalCallback()
    before = signal.getsignal(signal.SIGTERM)
    callback.on_run_start(trainer)
    os.kill(os.getpid(), signal.SIGTERM)
    assert trainer.stop_requested == "interrupted" and "SIGTERM" in trainer.said[0]
    callback.on_close(trainer)
    assert signal.getsignal(signal.SIGTERM) is before


def test_nonfinite_steps_are_counted_and_the_limit_stops_the_run_with_a_checkpoint():
    trainer, callback = StandIn(max_nonfinite=2), NonFiniteCallback()
    callback.on_step_end(trainer, StepResult(1.0, 1.0, 1e-3))
    callback.on_step_end(trainer, StepResult(float("nan"), 1.0, 1e-3))
    assert trainer.state.nonfinite_steps == 1 and not trainer.saved
    trainer.state.step = 7
    with pytest.raises(TrainingError, match="stopped at step 7: 2 steps .* last checkpoint: ckpt-7"):
        callback.on_step_end(trainer, StepResult(1.0, float("inf"), 1e-3))
    assert trainer.saved == [7] and trainer.finished == "nonfinite"


def test_nonfinite_weights_are_not_saved():
    trainer, callback = StandIn(max_nonfinite=1), NonFiniteCallback()
    with torch.no_grad():
        trainer.model.weight.fill_(float("nan"))
    trainer.ckpt = SimpleNamespace(latest=lambda: None)
    with pytest.raises(TrainingError, match="no checkpoint was written"):
        callback.on_step_end(trainer, StepResult(float("nan"), float("nan"), 1e-3))
    assert trainer.saved == []


def test_early_stopping_after_patience_validations_without_improvement():
    trainer, callback = StandIn(early_stopping_patience=2), ValidationCallback()
    assert callback.stop_reason(trainer) is None
    trainer.state.evals_without_improvement = 2
    assert callback.stop_reason(trainer) == "early_stopping"
    assert ValidationCallback().stop_reason(StandIn()) is None  # no patience set: never


def test_validation_runs_every_eval_every_steps_and_at_the_end_unless_interrupted():
    trainer, callback = StandIn(eval_every=4), ValidationCallback()
    ran = []
    callback.validate = lambda t: ran.append(t.state.step)  # the scoring itself: test_trainer.py
    for step in range(1, 9):
        trainer.state.step = step
        callback.on_step_end(trainer, StepResult(1.0, 1.0, 1e-3))
    callback.last_val_step = 8
    callback.on_run_end(trainer, "max_steps")  # just validated at 8: not again
    trainer.state.step = 9
    callback.on_run_end(trainer, "interrupted")  # would change the early-stopping counters
    callback.on_run_end(trainer, "max_minutes")
    assert ran == [4, 8, 9]


def test_periodic_checkpoints_skip_the_step_the_run_stops_at():
    trainer, callback = StandIn(ckpt_every=2), CheckpointCallback()
    callback.save = lambda t, rewind=False: t.saved.append(t.state.step)
    for step, stop in ((1, None), (2, None), (3, None), (4, "max_steps")):
        trainer.state.step = step
        callback.on_step_committed(trainer, stop)
    callback.on_run_end(trainer, "max_steps")
    callback.on_run_end(trainer, "already_complete")  # nothing new to save
    assert trainer.saved == [2, 4]


def test_communication_figures_average_per_step():
    steps = [(CommStep({"all_reduce": 100}, {"all_reduce": 1}, 150.0, 0.2), 1.0),
             (CommStep({"all_reduce": 300}, {"all_reduce": 3}, 450.0, 0.4), 1.0)]
    figures = comm_average(steps)
    assert figures["comm_bytes_per_step"] == 200 and figures["comm_collectives_per_step"] == 2
    assert figures["comm_fraction"] == pytest.approx(0.3) and figures["compute_only_s"] == pytest.approx(0.7)
    assert comm_average([]) == {}
