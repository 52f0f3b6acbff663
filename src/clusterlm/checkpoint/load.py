"""`load_model(path)`: any checkpoint a user can point at → a model in eval mode, its config, tokenizer.

PATH may be a checkpoint dir (single-process or DCP shards), a run dir (its `latest` checkpoint),
a single-file export or a Hugging Face model dir. Every verb that reads a model — eval, generate,
serve, export, fine-tuning and `train.init_from` — comes through here, so they accept exactly the
same paths and report problems with the same one-line `CheckpointError`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from clusterlm.checkpoint.formats import ClusterlmDir, DCPDir, ModelFormat, ModelSource, SingleFile
from clusterlm.checkpoint.hf import HFDir
from clusterlm.checkpoint.layout import META_FILE, latest_checkpoint
from clusterlm.config.model import ModelConfig
from clusterlm.errors import CheckpointError
from clusterlm.model.build import build_model, model_bytes
from clusterlm.runtime.memory import require_memory

FORMATS: tuple[ModelFormat, ...] = (SingleFile(), DCPDir(), ClusterlmDir(), HFDir())


@dataclass
class LoadedModel:
    model: nn.Module  # in eval mode
    config: ModelConfig
    tokenizer: Tokenizer | None  # when the checkpoint carries a tokenizer.json
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path = Path()
    tokenizer_path: Path | None = None  # the file `tokenizer` came from


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint dir or file as given, or a run dir's newest checkpoint (its `latest` pointer)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p} does not exist")
    if p.is_file() and p.suffix == ".safetensors":
        return p  # a single-file export
    if (p / META_FILE).is_file() or (p / "config.json").is_file():
        return p
    latest = latest_checkpoint(p)  # what a resumed run would continue from
    if latest is not None:
        if not (latest / META_FILE).is_file():
            raise CheckpointError(f"{latest}, the latest checkpoint of run dir {p}, has no {META_FILE} "
                                  "(incomplete or not a clusterlm checkpoint)")
        return latest
    raise CheckpointError(f"{p} is neither a checkpoint dir (no {META_FILE}) nor a run dir with checkpoints")


def open_model(path: str | Path) -> ModelSource:
    """The format, config, metadata and tokenizer of the model at `path` (no weights read yet)."""
    resolved = resolve_checkpoint(path)
    for fmt in FORMATS:
        if fmt.matches(resolved):
            return fmt.open(resolved)
    raise CheckpointError(f"{resolved} is not a checkpoint clusterlm can read")


def load_tokenizer_file(path: Path | None) -> Tokenizer | None:
    if path is None or not path.is_file():
        return None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
        raise CheckpointError(f"{path} is not a valid tokenizer ({exc})") from None


def load_model(path: str | Path, device: torch.device | str = "cpu", verify: bool = True) -> LoadedModel:
    """Load the model at `path` onto `device`, in eval mode (see the module docstring for PATH)."""
    source = open_model(path)
    tokenizer = load_tokenizer_file(source.tokenizer_path)
    params, need = model_bytes(source.config)
    require_memory(need, torch.device(device), f"{source.path}: the model ({params:,} parameters in fp32)",
                   "load it on a device with more memory (--device)")
    model = build_model(source.config, device=device, seed=None)  # every weight is loaded next
    source.load_into(model, verify=verify)
    model.eval()
    return LoadedModel(model, source.config, tokenizer, source.meta, source.path,
                       source.tokenizer_path if tokenizer is not None else None)
