"""Periodic validation and early stopping.

Every `train.eval_every` steps (and at the end, unless the run was interrupted) the model is
scored in eval mode on `train.eval_batches` micro-batches of the val split and of the train
split, giving the generalisation gap. Early stopping ends the run after
`train.early_stopping_patience` validations without an improvement of more than
`train.early_stopping_min_delta`. Validation time is not training time: it is left out of
`elapsed_s`, which drives time budgets and the schedule.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from clusterlm.eval.runner import evaluate_model
from clusterlm.train.callbacks.base import Callback

if TYPE_CHECKING:
    from clusterlm.train.step import StepResult
    from clusterlm.train.trainer import Trainer


class ValidationCallback(Callback):
    def __init__(self) -> None:
        self.last_val_step = -1

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if trainer.state.step % trainer.tcfg.eval_every == 0:
            t0 = time.perf_counter()
            self.validate(trainer)
            trainer.state.elapsed_s += time.perf_counter() - t0

    def on_run_end(self, trainer: Trainer, stop_reason: str) -> None:
        # An interrupted run skips the extra validation: it would change the early-stopping
        # counters and break bitwise-exact resume.
        if stop_reason not in ("already_complete", "interrupted") and self.last_val_step != trainer.state.step:
            self.validate(trainer)

    def stop_reason(self, trainer: Trainer) -> str | None:
        patience = trainer.tcfg.early_stopping_patience
        if patience is not None and trainer.state.evals_without_improvement >= patience:
            return "early_stopping"
        return None

    def validate(self, trainer: Trainer) -> dict[str, Any]:
        """Loss on `eval_batches` of val and of train (eval mode) → generalisation gap; early stopping."""
        tcfg, state, c = trainer.tcfg, trainer.state, trainer.components
        report = evaluate_model(
            c.model, c.dataset, ["train", "val"], seq_len=tcfg.seq_len, batch_size=tcfg.micro_batch,
            max_batches=tcfg.eval_batches, device=c.device, autocast=lambda: c.precision.autocast(c.device),
            collectives=trainer.process.collectives, dp_rank=c.layout.dp_rank, dp_size=c.layout.dp_size,
        )
        val, train = report["splits"]["val"], report["splits"]["train"]
        state.last_val_loss, state.last_train_eval_loss = val["loss"], train["loss"]
        if state.best_val_loss is None or val["loss"] < state.best_val_loss - tcfg.early_stopping_min_delta:
            state.best_val_loss, state.best_val_step = val["loss"], state.step
            state.evals_without_improvement = 0
        else:
            state.evals_without_improvement += 1
        self.last_val_step = state.step
        record = {
            "kind": "val", "step": state.step, "val_loss": val["loss"], "train_loss": train["loss"],
            "generalization_gap": report["generalization_gap"], "val_bits_per_byte": val["bits_per_byte"],
            "val_top1_accuracy": val["top1_accuracy"], "best_val_loss": state.best_val_loss,
        }
        trainer.log(record)
        trainer.say(f"step {state.step}: val loss {val['loss']:.4f} ({val['bits_per_byte']:.3f} bits/byte), "
                    f"train loss {train['loss']:.4f}, gap {report['generalization_gap']:+.4f}")
        return record
