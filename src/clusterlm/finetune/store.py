"""The one place fine-tuning reads a pretrained checkpoint and writes a run dir.

Reading goes through `clusterlm.checkpoint.load.load_model` (checkpoint dir, run dir,
single-file export or HF dir; sha256 verified, never unpickled) and writing through the
trainer's `CheckpointStore`, so a fine-tuned run dir has exactly the layout of a trained
one (`checkpoints/step-N/`, `latest`) and `eval`, `generate`, `serve` and `export` read it
unchanged. Keeping both imports here lets the checkpoint package move without touching
the rest of `finetune/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from clusterlm.checkpoint.load import LoadedModel, load_model
from clusterlm.checkpoint.store import CheckpointStore
from clusterlm.config.model import ModelConfig
from clusterlm.errors import CheckpointError, ConfigError, UsageError
from clusterlm.runtime.device import resolve_device

__all__ = ["LoadedModel", "load_base", "save_run_checkpoint", "torch_device"]


def torch_device(spec: str) -> torch.device:
    """`--device` (cpu | cuda[:N] | auto) as a torch device; UsageError naming the flag."""
    try:
        return resolve_device(spec, option="--device")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def load_base(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """A checkpoint (in eval mode) that carries a tokenizer; CheckpointError otherwise."""
    loaded = load_model(path, device=device)
    if loaded.tokenizer is None or loaded.tokenizer_path is None:
        raise CheckpointError(f"{loaded.path} has no tokenizer.json; fine-tuning needs the model's tokenizer")
    return loaded


def save_run_checkpoint(run_dir: Path, step: int, model: nn.Module, cfg: ModelConfig,
                        tokenizer_path: Path, meta: dict[str, Any]) -> Path:
    """Write `run_dir/checkpoints/step-N/` and `run_dir/latest`; returns the checkpoint dir."""
    return CheckpointStore(run_dir, keep_last=1).save(step, model, cfg, tokenizer_path, meta, states={})
