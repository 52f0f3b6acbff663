"""The fine-tuning step loop shared by classification and SFT: AdamW, warmup + cosine, clipping, log.

The optimizer and schedule are the trainer's own (`clusterlm.train.optim`: no weight decay on
norms, biases and embeddings; linear warmup then cosine decay, optionally to a wall-clock
budget). Only parameters with `requires_grad` are optimised, which is how head-only and LoRA
runs train a small part of the model. The log is the trainer's `MetricsLogger` (`metrics.jsonl`,
`kind: train` / `kind: val` records), so `train.plots.plot_loss` draws it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from clusterlm.config import limits as L
from clusterlm.config.limits import check_range
from clusterlm.config.train import TrainConfig
from clusterlm.errors import TrainingError, UsageError
from clusterlm.train.optim import WarmupCosineSchedule, build_optimizer
from clusterlm.train.metrics import MetricsLogger


@dataclass(frozen=True)
class LoopSettings:
    lr: float = 1e-3
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    max_minutes: float | None = None  # wall-clock budget: the schedule ends when it is spent
    batch_size: int = 16
    warmup_fraction: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    eval_every: int | None = None  # validate every N steps (None: only at the end)

    def check(self) -> None:
        """Every number in range (`config/limits.py`), before anything is loaded."""
        check_range("--lr", self.lr, 0, L.MAX_LR, low_open=True)
        check_range("--epochs", self.epochs, 0, 1e6, low_open=True)
        check_range("--max-steps", self.max_steps, 1, L.MAX_STEPS)
        check_range("--max-minutes", self.max_minutes, 0, L.MAX_MINUTES, low_open=True)
        check_range("--batch-size", self.batch_size, 1, L.MAX_MICRO_BATCH)
        check_range("--warmup-fraction", self.warmup_fraction, 0, 1, high_open=True)
        check_range("--weight-decay", self.weight_decay, 0, 1e3)
        check_range("--grad-clip", self.grad_clip, 0, 1e6)
        check_range("--seed", self.seed, 0, L.SEED_MAX)
        check_range("--log-every", self.log_every, 1, L.MAX_STEPS)
        check_range("--eval-every", self.eval_every, 1, L.MAX_STEPS)

    def total_steps(self, batches_per_epoch: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * batches_per_epoch))


@dataclass
class LoopResult:
    steps: int
    train_loss: float | None
    elapsed_s: float
    stop_reason: str  # "steps" | "max_minutes"
    val_loss: float | None = None  # of the last validation (after the final step), when there is one


def optimizer_for(model: nn.Module, settings: LoopSettings, total_steps: int) -> tuple[Any, WarmupCosineSchedule]:
    warmup = min(int(settings.warmup_fraction * total_steps), total_steps - 1)
    cfg = TrainConfig(lr=settings.lr, weight_decay=settings.weight_decay, warmup_steps=warmup,
                      max_steps=total_steps, min_lr_ratio=0.1,
                      max_minutes=settings.max_minutes)
    if not any(p.requires_grad for p in model.parameters()):
        raise UsageError("nothing to train: every parameter is frozen")
    return build_optimizer(model, cfg), WarmupCosineSchedule.from_config(cfg)


def run_loop(model: nn.Module, batches: Iterator[Any], loss_fn: Callable[[Any], torch.Tensor],
             settings: LoopSettings, total_steps: int, log: MetricsLogger,
             evaluate: Callable[[], float] | None = None,
             progress: Callable[[str], None] | None = None) -> LoopResult:
    """Run `total_steps` optimizer steps (or until the time budget is spent) over `batches`."""
    optimizer, schedule = optimizer_for(model, settings, total_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    started = time.perf_counter()
    window: list[float] = []
    loss_value, step, stop_reason = None, 0, "steps"
    for step in range(1, total_steps + 1):
        elapsed_s = time.perf_counter() - started
        if settings.max_minutes is not None and elapsed_s > settings.max_minutes * 60:
            step, stop_reason = step - 1, "max_minutes"
            break
        lr = schedule.apply(optimizer, step - 1, elapsed_s)
        loss = loss_fn(next(batches))
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss became non-finite at step {step}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        window.append(float(loss.detach()))
        if step % settings.log_every == 0 or step == total_steps:
            loss_value = sum(window) / len(window)
            log.log({"kind": "train", "step": step, "loss": loss_value, "lr": lr,
                     "elapsed_s": round(time.perf_counter() - started, 3)})
            if progress:
                progress(f"step {step}/{total_steps}  loss {loss_value:.4f}  lr {lr:.2e}")
            window = []
        if evaluate is not None and settings.eval_every and step % settings.eval_every == 0 and step < total_steps:
            _validate(model, evaluate, log, step, progress)
    if window:
        loss_value = sum(window) / len(window)
        log.log({"kind": "train", "step": step, "loss": loss_value, "elapsed_s": time.perf_counter() - started})
    val_loss = _validate(model, evaluate, log, step, progress) if evaluate is not None else None
    model.eval()
    return LoopResult(step, loss_value, time.perf_counter() - started, stop_reason, val_loss)


def _validate(model: nn.Module, evaluate: Callable[[], float], log: MetricsLogger, step: int,
              progress: Callable[[str], None] | None) -> float:
    model.eval()
    with torch.no_grad():
        val_loss = evaluate()
    model.train()
    log.log({"kind": "val", "step": step, "val_loss": val_loss})
    if progress:
        progress(f"step {step}  val loss {val_loss:.4f}")
    return val_loss


def autocast_for(device: torch.device) -> Any:
    """bf16 autocast on a GPU that supports it (as training's `precision=auto`), fp32 otherwise."""

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
