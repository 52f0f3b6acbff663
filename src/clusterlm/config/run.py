"""The whole run configuration: one object that flows through the program."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pydantic import Field

from clusterlm.config.base import Section, apply_overrides, load_yaml, validate
from clusterlm.config.data import DataConfig
from clusterlm.config.model import ModelConfig
from clusterlm.config.parallel import ParallelConfig, ParallelPlan
from clusterlm.config.recipes import resolve_config_path
from clusterlm.config.train import TrainConfig
from clusterlm.errors import ConfigError


class RunConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)


def load_run_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """YAML file or recipe name (optional) + dotted overrides → validated `RunConfig`."""
    data = load_yaml(resolve_config_path(str(path))) if path is not None else {}
    return validate(RunConfig, apply_overrides(data, list(overrides)))


def resolve_grad_accum(train: TrainConfig, dp_size: int) -> int:
    """Micro-batches per optimizer step on each rank, from `train.batch_size` or `train.grad_accum`."""
    if train.batch_size is None:
        return train.grad_accum
    per_step = train.micro_batch * dp_size
    if train.batch_size % per_step:
        raise ConfigError(
            f"train.batch_size ({train.batch_size}) is not a multiple of micro_batch × data-parallel "
            f"ranks ({train.micro_batch} × {dp_size} = {per_step})"
        )
    accum = train.batch_size // per_step
    if "grad_accum" in train.model_fields_set and train.grad_accum != accum:
        raise ConfigError(
            f"train.grad_accum ({train.grad_accum}) contradicts train.batch_size ({train.batch_size}) "
            f"= micro_batch {train.micro_batch} × ranks {dp_size} × accumulation {accum}; set only one of them"
        )
    return accum


def parallel_plan(cfg: RunConfig, world_size: int) -> ParallelPlan:
    """The validated layout `cfg` describes on `world_size` ranks — what `train` runs and `launch` checks."""
    plan = ParallelPlan.resolve(cfg.parallel, world_size, micro_batch=cfg.train.micro_batch,
                                recompute="full" if cfg.train.activation_checkpointing else "none")
    accum = resolve_grad_accum(cfg.train, plan.dp)
    plan = replace(plan, grad_accum=accum)
    return plan.check(cfg.model, cfg.train.seq_len, cfg.train.precision)
