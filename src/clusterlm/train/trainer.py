"""The training loop: optimizer steps, with callbacks around them.

`Trainer(cfg).run()` trains a model from a `RunConfig`. Re-running it on the same
`train.out_dir` resumes from the newest checkpoint (`resume="auto"`); a resumed run reproduces
an uninterrupted one bit for bit on CPU when the schedule is step-based, because everything
the loop depends on — weights, AdamW moments, schedule, loader position, RNGs, counters — is
saved in the checkpoint (see `Trainer.stateful`).

The loop itself only steps, keeps the counters and asks whether to stop; logging, validation,
checkpoints, signals and the non-finite policy are callbacks (`train/callbacks/`). The same
loop runs one process or many: `process` says which rank this is, and the run's
`ParallelPlan` is applied to the model from outside (`train/setup.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clusterlm.checkpoint.backends import CheckpointBackend
from clusterlm.checkpoint.runlock import RunLock
from clusterlm.config.base import dump_yaml
from clusterlm.config.run import RunConfig
from clusterlm.errors import UsageError
from clusterlm.runtime.device import resolve_device
from clusterlm.runtime.process import Process
from clusterlm.train import setup as build
from clusterlm.train.callbacks.base import Callback
from clusterlm.train.callbacks.checkpointing import CheckpointCallback
from clusterlm.train.callbacks.metrics import MetricsCallback
from clusterlm.train.callbacks.nonfinite import NonFiniteCallback
from clusterlm.train.callbacks.signals import SignalCallback
from clusterlm.train.callbacks.validation import ValidationCallback
from clusterlm.train.metrics import MetricsLogger, Progress
from clusterlm.train.plots import plot_loss
from clusterlm.train.resume import Resume, check_resumed_step, find_resume_checkpoint
from clusterlm.train.rundir import PLOT_FILE, claim_run_dir, open_run_dir, verify_dataset_once
from clusterlm.train.state import RNGState, TrainState, seed_everything
from clusterlm.train.step import StepRunner, next_token_loss


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    tokens_seen: int
    stop_reason: str  # "max_steps" | "max_minutes" | "early_stopping" | "interrupted" | "already_complete"
    checkpoint: Path | None
    summary: dict[str, Any] = field(default_factory=dict)


class Trainer:
    def __init__(self, cfg: RunConfig, *, process: Process | None = None, resume: Resume = "auto",
                 progress: bool = True, on_step_end: Callable[[Trainer], None] | None = None,
                 checkpoint_backend: CheckpointBackend | None = None, overwrite: bool = False) -> None:
        self.cfg = cfg
        self.tcfg = cfg.train
        self.process = process or Process(device=resolve_device(cfg.train.device))
        self.resume_mode = resume
        self.overwrite = overwrite  # start over in a run dir that holds an earlier run
        if overwrite and resume == "require":
            raise UsageError("--overwrite starts the run over; it cannot be combined with --resume")
        self.lock: RunLock | None = None
        self.show_progress = progress and self.process.is_main
        self.on_step_end = on_step_end  # a hook for tests and tools, after the step's callbacks
        self.checkpoint_backend = checkpoint_backend  # None: LocalBackend, or DCPBackend with several ranks
        self.run_dir = Path(cfg.train.out_dir)
        self.metrics_cb, self.checkpoint_cb, self.validation_cb = (
            MetricsCallback(), CheckpointCallback(), ValidationCallback())
        self.callbacks: list[Callback] = [SignalCallback(), self.metrics_cb, NonFiniteCallback(),
                                          self.validation_cb, self.checkpoint_cb]
        self.stop_requested: str | None = None
        self.last_step_time_s = 0.0
        self._setup_done = False

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Validate everything that can be validated, build the model, and load a checkpoint to resume."""
        tcfg, proc = self.tcfg, self.process
        dataset = build.open_dataset(self.cfg)
        model_cfg = build.resolve_model_config(self.cfg.model, dataset, tcfg)
        build.check_splits(dataset, tcfg.seq_len)
        self.ckpt = build.checkpoint_store(self.cfg, proc, self.checkpoint_backend)
        # One writer per run dir: nothing in it is read or written before the lock is held.
        self.lock = claim_run_dir(self.ckpt, proc, overwrite=self.overwrite)
        try:
            self._setup_under_lock(dataset, model_cfg)
        except BaseException:
            self.close()
            raise
        self._setup_done = True

    def _setup_under_lock(self, dataset: Any, model_cfg: Any) -> None:
        tcfg, proc = self.tcfg, self.process
        self.dataset_record = verify_dataset_once(dataset, self.run_dir, proc)
        resume_from = find_resume_checkpoint(self.ckpt, self.resume_mode, model_cfg, dataset)
        # Resuming wins over train.init_from: init_from only seeds a fresh run.
        seed_everything(tcfg.seed)
        self.components = build.build_components(self.cfg, proc, dataset, model_cfg,
                                                 tcfg.init_from if resume_from is None else None)
        plan = self.components.layout.plan
        self.runner = StepRunner(self.components, tcfg, plan.grad_accum, self.compute_loss)
        self.state, self.rng = TrainState(), RNGState()
        self.resumed_from = resume_from
        if resume_from is not None:
            self.ckpt.load(resume_from, self.model, self.stateful())
            check_resumed_step(self.state, resume_from)
        self.tokens_per_step = tcfg.micro_batch * plan.grad_accum * tcfg.seq_len * plan.dp

    def close(self) -> None:
        """Give the run dir back (its lock); `run` does this itself when it ends, however it ends."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # The parts tests and tools reach for by name.
    @property
    def model(self) -> nn.Module:
        return self.components.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.components.optimizer

    @property
    def loader(self) -> Any:
        return self.components.loader

    @loader.setter
    def loader(self, value: Any) -> None:
        self.components.loader = value

    def stateful(self) -> dict[str, Any]:
        """Everything besides the weights that an exact resume needs."""
        return self.components.stateful(self.state, self.rng)

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        if not self._setup_done:
            self.setup()
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> TrainResult:
        state, proc = self.state, self.process
        if proc.is_main:
            resolved = self.cfg.model_copy(update={"model": self.components.model_cfg})
            open_run_dir(self.ckpt, dump_yaml(resolved), self.dataset_record)
        self.metrics = MetricsLogger(self.run_dir, enabled=proc.is_main, tensorboard=self.tcfg.tensorboard,
                                     resume_step=state.step if self.resumed_from is not None else None)
        self.progress = Progress(self.tcfg.max_steps, initial=state.step, enabled=self.show_progress)
        if self.resumed_from is not None:
            self.say(f"resuming from {self.resumed_from} (step {state.step})")
        stop_reason = self._stop_reason()
        if stop_reason is not None and self.resumed_from is not None:
            stop_reason = "already_complete"
        try:
            self._each("on_run_start")
            while stop_reason is None:
                stop_reason = self._one_step()
            self._each("on_run_end", stop_reason)
        finally:
            self._each("on_close")
            self.progress.close()
        summary = self.metrics_cb.summary(self, stop_reason)
        self.metrics.log({"kind": "summary", "step": state.step, **summary})
        self.metrics.close()
        if proc.is_main and self.tcfg.plots:
            plot_loss(self.metrics.path, self.run_dir / PLOT_FILE)
        proc.collectives.barrier()
        return TrainResult(self.run_dir, state.step, state.tokens_seen, stop_reason, self.checkpoint_cb.last, summary)

    def _one_step(self) -> str | None:
        state, collectives = self.state, self.process.collectives
        self._each("on_step_start")
        t0 = time.perf_counter()
        try:
            result = self.runner.run(state.step, state.elapsed_s)
        except KeyboardInterrupt:
            self._each("on_interrupt")
            raise
        # Ranks agree on elapsed time (the slowest rank's): a time budget and the schedule depend on it.
        self.last_step_time_s = collectives.reduce_max(time.perf_counter() - t0)
        state.elapsed_s += self.last_step_time_s
        state.step += 1
        state.tokens_seen += self.tokens_per_step
        self._each("on_step_end", result)
        stop_reason = collectives.agree_stop(self._stop_reason())
        self._each("on_step_committed", stop_reason)
        if self.on_step_end is not None:
            self.on_step_end(self)
            stop_reason = stop_reason or collectives.agree_stop(self._stop_reason())
        return stop_reason

    def _each(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def train_step(self) -> tuple[float, float, float]:
        """One optimizer step over `grad_accum` micro-batches → (loss, grad norm, lr)."""
        result = self.runner.run(self.state.step, self.state.elapsed_s)
        return result.loss, result.grad_norm, result.lr

    def compute_loss(self, module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of one micro-batch (`step.next_token_loss`); a subclass may override."""
        return next_token_loss(self.components, module, inputs, targets)

    # ------------------------------------------------------------------ stopping and reporting
    def _stop_reason(self) -> str | None:
        state, tcfg = self.state, self.tcfg
        if self.stop_requested:
            return self.stop_requested
        if state.step >= tcfg.max_steps:
            return "max_steps"
        if tcfg.max_minutes is not None and state.elapsed_s >= tcfg.max_minutes * 60.0:
            return "max_minutes"
        return next((r for r in (cb.stop_reason(self) for cb in self.callbacks) if r), None)

    def request_stop(self, reason: str = "interrupted") -> None:
        """Finish the current step, validate, checkpoint and return (used by SIGTERM/SIGINT)."""
        self.stop_requested = reason

    def save_checkpoint(self) -> Path:
        return self.checkpoint_cb.save(self)

    def log(self, record: dict[str, Any]) -> None:
        self.metrics.log(record)

    def say(self, text: str) -> None:
        self.progress.write(text)

    def finish_logs(self, stop_reason: str) -> None:
        """Close the logs of a run that ends with an error (its short summary record first)."""
        self.metrics.log({"kind": "summary", "step": self.state.step, "stop_reason": stop_reason,
                          "nonfinite_steps": self.state.nonfinite_steps})
        self.metrics.close()
        self.progress.close()

