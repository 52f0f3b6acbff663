"""Model-weight formats behind one interface: find the config, then fill a model with the weights.

    clusterlm dir   CKPT/meta.json + model.safetensors (+ tokenizer.json): a checkpoint or `save_model_dir`
    DCP dir         CKPT/meta.json + dcp/ shards of a sharded run: resharded into any model layout
    single file     OUT.safetensors with the config in its header (+ OUT.json, OUT.tokenizer.json)
    HF dir          config.json + model.safetensors of GPT2LMHeadModel / LlamaForCausalLM (`hf.py`)

`open(path)` reads only metadata; `load_weights(source, model)` fills a model that was built from
`source.config` — plain or already parallelized — through `state.load_full_state` (or DCP's
resharding load). Only safetensors and JSON are parsed: no format here can run code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from clusterlm.checkpoint.dcp_io import dedupe_shared, is_dcp_checkpoint, load_tensors
from clusterlm.checkpoint.layout import (
    META_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    new_meta,
    parse_meta,
    read_meta,
    write_meta,
)
from clusterlm.checkpoint.state import full_model_state, load_full_state, load_model_state, model_state, tied_groups
from clusterlm.config.model import ModelConfig
from clusterlm.errors import CheckpointError
from clusterlm.fsio import atomic_write_bytes, atomic_write_json

MODEL_KEY = "model"  # prefix of the weights among a DCP checkpoint's tensors


@dataclass
class ModelSource:
    """What a format found at a path, before any weight is read."""

    path: Path
    config: ModelConfig
    format: ModelFormat
    meta: dict[str, Any] = field(default_factory=dict)
    tokenizer_path: Path | None = None

    def load_into(self, model: nn.Module, verify: bool = True) -> None:
        self.format.load_weights(self, model, verify)


class ModelFormat(Protocol):
    name: str

    def matches(self, path: Path) -> bool: ...
    def open(self, path: Path) -> ModelSource: ...
    def load_weights(self, source: ModelSource, model: nn.Module, verify: bool = True) -> None: ...


def _tokenizer(path: Path) -> Path | None:
    return path if path.is_file() else None


# ------------------------------------------------------------------------------------ writing
def weights_bytes(model: nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """The model's whole tensors as safetensors bytes (a tied head stored once, under its first name)."""
    state = full_model_state(model)
    dropped = {name for names in tied_groups(model) for name in names[1:]}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if k not in dropped}
    return save_safetensors_bytes(tensors, metadata=metadata)


def save_model_dir(directory: Path, model: nn.Module, cfg: ModelConfig, tokenizer_path: Path | None,
                   meta: dict[str, Any]) -> None:
    """Weights, tokenizer copy and meta.json into `directory` (each file atomically, meta.json last)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = weights_bytes(model)
    atomic_write_bytes(directory / WEIGHTS_FILE, data)
    if tokenizer_path is not None:
        atomic_write_bytes(directory / TOKENIZER_FILE, Path(tokenizer_path).read_bytes())
    fields = {**meta, "weights_sha256": hashlib.sha256(data).hexdigest()}
    write_meta(directory, new_meta(cfg, "safetensors", **fields))


def single_file_outputs(out: Path, with_tokenizer: bool) -> list[Path]:
    """Every path `save_single_file` writes (all checked for --overwrite before any is written)."""
    out = Path(out)
    return [out, out.with_suffix(".json")] + ([out.with_suffix(".tokenizer.json")] if with_tokenizer else [])


def save_single_file(out: Path, model: nn.Module, cfg: ModelConfig, meta: dict[str, Any],
                     tokenizer_path: Path | None = None) -> list[Path]:
    """OUT.safetensors with the metadata in its header, plus OUT.json (and OUT.tokenizer.json).

    The header copy makes the one file self-describing; the JSON sidecar is for people and tools."""
    paths = single_file_outputs(out, tokenizer_path is not None)
    info = new_meta(cfg, "safetensors", **meta).as_dict()
    data = weights_bytes(model, metadata={"clusterlm": json.dumps(info)})
    atomic_write_bytes(paths[0], data)
    atomic_write_json(paths[1], info | {"weights_sha256": hashlib.sha256(data).hexdigest()})
    if tokenizer_path is not None:
        atomic_write_bytes(paths[2], Path(tokenizer_path).read_bytes())
    return paths


# ------------------------------------------------------------------------------------ reading
def read_safetensors(data: bytes, where: Path) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{where} is corrupted or not a safetensors file ({exc})") from None


def _open_dir(path: Path, fmt: ModelFormat) -> ModelSource:
    meta = read_meta(path)
    return ModelSource(path, meta.model_cfg(path / META_FILE), fmt, meta.as_dict(), _tokenizer(path / TOKENIZER_FILE))


class ClusterlmDir:
    """A checkpoint dir (or `save_model_dir` output) with model.safetensors."""

    name = "clusterlm"

    def matches(self, path: Path) -> bool:
        return path.is_dir() and (path / META_FILE).is_file() and not is_dcp_checkpoint(path)

    def open(self, path: Path) -> ModelSource:
        return _open_dir(path, self)

    def load_weights(self, source: ModelSource, model: nn.Module, verify: bool = True) -> None:
        weights = source.path / WEIGHTS_FILE
        try:
            data = weights.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{source.path} has no {WEIGHTS_FILE}") from None
        expected = source.meta.get("weights_sha256")
        if verify and expected and hashlib.sha256(data).hexdigest() != expected:
            raise CheckpointError(f"{weights} is corrupted (sha256 differs from the one in {META_FILE})")
        load_full_state(model, read_safetensors(data, weights), weights)


class DCPDir:
    """A sharded checkpoint written by a distributed run; DCP reshards it into `model`'s layout."""

    name = "dcp"

    def matches(self, path: Path) -> bool:
        return path.is_dir() and (path / META_FILE).is_file() and is_dcp_checkpoint(path)

    def open(self, path: Path) -> ModelSource:
        return _open_dir(path, self)

    def load_weights(self, source: ModelSource, model: nn.Module, verify: bool = True, group: Any = None) -> None:
        template = model_state(model)  # this model's layout: DCP loads each rank's slice in place
        load_tensors(source.path, dedupe_shared({f"{MODEL_KEY}.{k}": v for k, v in template.items()}), group)
        load_model_state(model, template)


class SingleFile:
    """`clusterlm export --format safetensors` output: one self-describing .safetensors file."""

    name = "single-file"

    def matches(self, path: Path) -> bool:
        return path.is_file() and path.suffix == ".safetensors"

    def open(self, path: Path) -> ModelSource:
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is corrupted or not a safetensors file ({exc})") from None
        if "clusterlm" not in header:
            raise CheckpointError(f"{path} carries no clusterlm model config in its header")
        try:
            data = json.loads(header["clusterlm"])
        except json.JSONDecodeError:
            raise CheckpointError(f"{path}: the model config in its header is not valid JSON") from None
        meta = parse_meta(data, path)
        return ModelSource(path, meta.model_cfg(path), self, meta.as_dict(),
                           _tokenizer(path.with_suffix(".tokenizer.json")))

    def load_weights(self, source: ModelSource, model: nn.Module, verify: bool = True) -> None:
        load_full_state(model, read_safetensors(source.path.read_bytes(), source.path), source.path)
