"""One optimizer step: `grad_accum` micro-batches of forward + backward, clipping, the update.

    for each micro-batch:  x, y ← loader;  loss = CE(model(x), y);  backward(loss / accum)
    clip the global gradient norm;  AdamW step (skipped when the loss or norm is not finite)

Each micro-batch contributes 1/accum of the step's mean loss, so the summed gradient equals that
of one big batch (and DDP/FSDP average over ranks). Data-parallel gradients are reduced once per
step, after the last micro-batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clusterlm.config.train import TrainConfig
from clusterlm.train.augment import augment_batch, augment_generator
from clusterlm.train.setup import Components

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean over micro-batches (this rank)
    grad_norm: float  # global norm before clipping
    lr: float

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.grad_norm)


def next_token_loss(c: Components, module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of `module` on one micro-batch, fp32 softmax even under autocast.

    Where allowed, the output projection is fused with the loss (`model/loss.py`: same value and
    gradients without the (B·T, V) logits tensor); a tensor-parallel head takes the plain path."""
    if c.fused_loss:
        return module(inputs, targets=targets)
    logits = module(inputs)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


class StepRunner:
    """Runs optimizer steps; `updating` is True while the weights change (an interrupt then cannot
    be rewound to the step's start)."""

    def __init__(self, c: Components, tcfg: TrainConfig, grad_accum: int, loss_fn: LossFn) -> None:
        self.c, self.tcfg, self.grad_accum, self.loss_fn = c, tcfg, grad_accum, loss_fn
        self.updating = False

    def run(self, step: int, elapsed_s: float) -> StepResult:
        c, tcfg = self.c, self.tcfg
        device = c.device
        lr = c.schedule.apply(c.optimizer, step, elapsed_s)
        module = c.parallel.train_module
        loss_sum = torch.zeros((), device=device)
        for micro in range(self.grad_accum):
            x, y = next(c.loader)
            if tcfg.augment != "none":
                x, y = augment_batch(tcfg.augment, x, y, rate=tcfg.augment_rate, eos_id=c.dataset.eos_id,
                                     pad_id=c.dataset.pad_id, generator=augment_generator(tcfg.seed, step, micro))
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with c.micro_step(sync=micro == self.grad_accum - 1):
                with c.precision.autocast(device):
                    loss = self.loss_fn(module, x, y)
                scaled = loss / self.grad_accum
                if c.scaler is not None:
                    scaled = c.scaler.scale(scaled)
                scaled.backward()
            loss_sum += loss.detach()
        if c.scaler is not None:
            c.scaler.unscale_(c.optimizer)
        grad_norm = c.clip_grad_norm(tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf"))
        result = StepResult(float(loss_sum) / self.grad_accum, float(grad_norm), lr)  # one host sync per step
        self.updating = True
        if c.scaler is not None:
            c.scaler.step(c.optimizer)  # skips the update itself on inf/nan gradients
            c.scaler.update()
        elif result.finite:
            c.optimizer.step()
        self.updating = False
        c.optimizer.zero_grad(set_to_none=True)
        return result
