"""The whole run configuration: one object that flows through the program."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from clusterlm.config.base import Section, apply_overrides, load_yaml, validate
from clusterlm.config.data import DataConfig
from clusterlm.config.parallel import ParallelConfig
from clusterlm.config.train import TrainConfig
from clusterlm.model.config import ModelConfig


class RunConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)


def load_run_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """YAML file (optional) + dotted overrides → validated `RunConfig`."""
    data = load_yaml(path) if path is not None else {}
    return validate(RunConfig, apply_overrides(data, list(overrides)))
