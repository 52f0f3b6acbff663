"""AdamW with weight-decay parameter groups, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from clusterlm.config.train import TrainConfig
from clusterlm.errors import CheckpointError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters into a decayed group (matrices) and a non-decayed one.

    Weight decay pulls weights toward zero, which regularises matrices that mix
    features. Biases, norm gains and embedding rows are per-feature scales or
    lookup tables: shrinking them only fights the model (nanoGPT, GPT-3 appendix B).
    A tied output head shares the embedding tensor, so it is not decayed either.
    """
    embedding_ids = {
        id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)
    }
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for _, p in model.named_parameters():  # named_parameters() already yields a tied tensor once
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.ndim >= 2 and id(p) not in embedding_ids:
            decay.append(p)
        else:
            no_decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `param_groups`, using the fused kernel where torch has one.

    On CPU the fused kernel is ~5× faster than the per-tensor loop (measured: 47 vs 239 ms
    for 9M parameters), which matters for small models whose steps take well under a second.
    """
    groups = [g for g in param_groups(model, cfg.weight_decay) if g["params"]]
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    params = [p for g in groups for p in g["params"]]
    # Plain tensors only: sharded (DTensor) parameters of distributed runs keep the default path.
    plain = all(type(p.data) is torch.Tensor for p in params)
    if plain and {p.device.type for p in params} <= {"cpu", "cuda"}:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):  # e.g. a parameter type without a fused kernel
            pass
    return torch.optim.AdamW(groups, **kwargs)


class WarmupCosineSchedule:
    """Linear warmup to `lr`, then cosine decay to `lr · min_lr_ratio`.

    The decay follows *progress* in [0, 1]: `step / max_steps`, or, with a wall-clock
    budget, the larger of that and `elapsed_s / budget_s`, so a time-limited run ends
    its schedule when its time is up however fast the machine is. With a step budget
    the schedule is a pure function of the step (what exact resume relies on); with a
    time budget the progress at the end of warmup is state, saved with the checkpoint.
    """

    def __init__(
        self,
        lr: float,
        min_lr_ratio: float,
        warmup_steps: int,
        max_steps: int,
        budget_s: float | None = None,
    ) -> None:
        self.lr = lr
        self.min_lr = lr * min_lr_ratio
        self.warmup_steps = warmup_steps
        self.max_steps = max_steps
        self.budget_s = budget_s
        self.decay_start: float | None = None  # progress when warmup ended

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> WarmupCosineSchedule:
        budget_s = cfg.max_minutes * 60.0 if cfg.max_minutes is not None else None
        return cls(cfg.lr, cfg.min_lr_ratio, cfg.warmup_steps, cfg.max_steps, budget_s)

    def progress(self, step: int, elapsed_s: float = 0.0) -> float:
        p = step / self.max_steps
        if self.budget_s is not None:
            p = max(p, elapsed_s / self.budget_s)
        return min(p, 1.0)

    def lr_at(self, step: int, elapsed_s: float = 0.0) -> float:
        """Learning rate for optimizer step `step` (0-based) after `elapsed_s` of training."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / (self.warmup_steps + 1)
        p = self.progress(step, elapsed_s)
        if self.decay_start is None:
            self.decay_start = p if self.budget_s is not None else self.warmup_steps / self.max_steps
        span = 1.0 - self.decay_start
        frac = 1.0 if span <= 0 else min(max((p - self.decay_start) / span, 0.0), 1.0)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * frac))

    def apply(self, optimizer: torch.optim.Optimizer, step: int, elapsed_s: float = 0.0) -> float:
        lr = self.lr_at(step, elapsed_s)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"decay_start": self.decay_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """`decay_start` is a progress in [0, 1] (or null before warmup ended); anything else would
        resume with a wrong learning rate, so it is a CheckpointError."""
        if not isinstance(state, dict) or set(state) - {"decay_start"}:
            raise CheckpointError(f"schedule state must be {{'decay_start': …}}, got {state!r:.80}")
        value = state.get("decay_start")
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                               and math.isfinite(value) and 0.0 <= value <= 1.0)
        if not ok:
            raise CheckpointError(f"schedule state 'decay_start' must be a progress in [0, 1] or null, got {value!r}")
        self.decay_start = None if value is None else float(value)
