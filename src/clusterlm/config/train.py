"""`train:` section — the optimisation loop, checkpoints and logging of `clusterlm train`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from clusterlm.config.base import Section


class TrainConfig(Section):
    out_dir: str = "runs/default"
    init_from: str | None = None  # checkpoint dir/run dir to initialise weights from
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seq_len: int = Field(default=256, ge=1)
    micro_batch: int = Field(default=16, ge=1)  # sequences per micro-batch per rank
    grad_accum: int = Field(default=1, ge=1)
    max_steps: int = Field(default=1000, ge=1)
    max_minutes: float | None = None  # stop (and checkpoint) after this much wall-clock time
    lr: float = Field(default=1e-3, gt=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    warmup_steps: int = Field(default=50, ge=0)
    weight_decay: float = Field(default=0.1, ge=0)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = Field(default=1.0, ge=0)
    compile: bool = False
    activation_checkpointing: bool = False
    eval_every: int = Field(default=100, ge=1)
    eval_batches: int = Field(default=20, ge=1)
    early_stopping_patience: int | None = None
    augment: Literal["none", "span_mask", "doc_shuffle"] = "none"
    ckpt_every: int = Field(default=200, ge=1)
    keep_last: int = Field(default=3, ge=1)
    log_every: int = Field(default=10, ge=1)
    max_nonfinite: int = Field(default=5, ge=1)
    tensorboard: bool = True
