"""`train:` section — the optimisation loop, checkpoints and logging of `clusterlm train`."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from clusterlm.config import limits as L
from clusterlm.config.base import Section


class TrainConfig(Section):
    """Every number has a range (`config/limits.py`); nan and inf are refused."""

    model_config = ConfigDict(allow_inf_nan=False)

    out_dir: str = "runs/default"
    # Initialise weights (only) from a checkpoint dir, a run dir (its `latest`) or an HF model dir.
    init_from: str | None = None
    seed: int = Field(default=1337, ge=0, le=L.SEED_MAX)  # 64-bit: what torch.manual_seed takes
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 autocast on GPUs that support it; on CPU bf16 only if measured faster than fp32.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seq_len: int = Field(default=256, ge=1, le=L.MAX_SEQ_LEN)
    micro_batch: int = Field(default=16, ge=1, le=L.MAX_MICRO_BATCH)  # sequences per micro-batch per rank
    grad_accum: int = Field(default=1, ge=1, le=L.MAX_GRAD_ACCUM)
    # Global batch in sequences per optimizer step; when set, grad_accum is derived from it
    # (batch_size = micro_batch · grad_accum · data-parallel ranks must hold exactly).
    batch_size: int | None = Field(default=None, ge=1, le=L.MAX_MICRO_BATCH * L.MAX_GRAD_ACCUM)
    max_steps: int = Field(default=1000, ge=1, le=L.MAX_STEPS)
    # Wall-clock training budget: the cosine schedule follows max(step/max_steps, time/budget)
    # and the run stops (with a checkpoint) when the budget is spent.
    max_minutes: float | None = Field(default=None, gt=0, le=L.MAX_MINUTES)
    lr: float = Field(default=1e-3, gt=0, le=L.MAX_LR)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)  # cosine decays to lr · min_lr_ratio
    warmup_steps: int = Field(default=50, ge=0, le=L.MAX_STEPS)
    weight_decay: float = Field(default=0.1, ge=0)  # AdamW; not applied to norms/biases/embeddings
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0)
    grad_clip: float = Field(default=1.0, ge=0)  # max global grad norm; 0 disables clipping
    compile: bool = False  # torch.compile the model (slower than eager for small CPU models)
    activation_checkpointing: bool = False  # recompute each block's activations in backward
    eval_every: int = Field(default=100, ge=1, le=L.MAX_STEPS)  # validate every N optimizer steps (and at the end)
    eval_batches: int = Field(default=20, ge=1, le=L.MAX_STEPS)  # micro-batches per split per validation
    early_stopping_patience: int | None = Field(default=None, ge=1, le=L.MAX_STEPS)  # validations without improvement
    early_stopping_min_delta: float = Field(default=0.0, ge=0)
    # Data augmentation (a remedy for overfitting): span_mask replaces random input spans
    # with the pad token (targets unchanged); doc_shuffle permutes the documents in a window.
    augment: Literal["none", "span_mask", "doc_shuffle"] = "none"
    augment_rate: float = Field(default=0.1, ge=0, le=1)  # fraction of input tokens masked (span_mask)
    ckpt_every: int = Field(default=200, ge=1, le=L.MAX_STEPS)
    keep_last: int = Field(default=3, ge=1, le=L.MAX_KEEP_LAST)
    log_every: int = Field(default=10, ge=1, le=L.MAX_STEPS)
    max_nonfinite: int = Field(default=5, ge=1, le=L.MAX_STEPS)  # skipped non-finite steps before the run stops
    tensorboard: bool = True
    plots: bool = True

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.max_minutes is None and self.warmup_steps >= self.max_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be smaller than max_steps ({self.max_steps})"
            )
        if self.batch_size is not None and self.batch_size % self.micro_batch:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of micro_batch ({self.micro_batch})"
            )
        return self
