"""What goes into one run checkpoint directory, for a single process or for sharded ranks.

    LocalBackend  one process writes it all: model.safetensors (+ tokenizer, meta.json) and
                  train_state.pt (optimizer, schedule, loader, RNG, counters; weights_only-loadable)
    DCPBackend    every rank writes its shards with torch.distributed.checkpoint: dcp/ holds the
                  tensors (weights, AdamW moments, RNG states), train_state.json the rest (rank 0)

Both read either kind: a DCP checkpoint resumes at any world size, one process included, and a
single-process checkpoint resumes into a sharded run (weights and optimizer state are re-keyed
by parameter name through `state.py`). Everything that must survive a restart is a `Stateful`
in one dict (torchtitan's pattern).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from clusterlm.checkpoint.dcp_io import DCPWriter, PendingSave, is_dcp_checkpoint, load_tensors
from clusterlm.checkpoint.formats import MODEL_KEY, ClusterlmDir, save_model_dir
from clusterlm.checkpoint.layout import TOKENIZER_FILE, TRAIN_STATE_FILE, TRAIN_STATE_JSON, new_meta, write_meta
from clusterlm.checkpoint.safety import load_torch_file
from clusterlm.checkpoint.state import (
    check_optimizer_state,
    load_model_state,
    load_optimizer_state,
    merge_tensors,
    model_state,
    optimizer_by_fqn,
    optimizer_state,
    split_tensors,
)
from clusterlm.config.model import ModelConfig
from clusterlm.errors import CheckpointError, ClusterLMError
from clusterlm.fsio import atomic_write_bytes, atomic_write_json


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CheckpointBackend(Protocol):
    """Writes/reads the contents of one checkpoint directory. `collective`: every rank takes part."""

    collective: bool

    def write(self, directory: Path, model: nn.Module, model_cfg: ModelConfig, tokenizer_path: Path | None,
              meta: dict[str, Any], states: dict[str, Stateful]) -> PendingSave | None: ...

    def read(self, directory: Path, model: nn.Module, states: dict[str, Stateful]) -> None: ...


def load_train_state(directory: Path) -> dict[str, Any]:
    """`train_state.pt` (weights-only): tensors and plain data, never code."""
    path = Path(directory) / TRAIN_STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {TRAIN_STATE_FILE} (weights-only checkpoint?)")
    state = load_torch_file(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a train state (a {type(state).__name__})")
    return state


def _read_local(directory: Path, model: nn.Module, states: dict[str, Stateful]) -> None:
    """A single-process checkpoint into `model` (plain or sharded) and `states`."""
    ClusterlmDir().load_weights(ClusterlmDir().open(directory), model)
    saved = load_train_state(directory)
    missing = [name for name in states if name not in saved]
    if missing:
        raise CheckpointError(f"{directory / TRAIN_STATE_FILE} lacks state for: {', '.join(missing)}")
    for name, obj in states.items():
        with _restoring(directory / TRAIN_STATE_FILE, name):
            if isinstance(obj, torch.optim.Optimizer):
                by_name = optimizer_by_fqn(model, obj, saved[name])
                check_optimizer_state(model, obj, by_name)
                load_optimizer_state(model, obj, by_name, full=True)
            else:
                obj.load_state_dict(saved[name])


@contextlib.contextmanager
def _restoring(where: Path, name: str) -> Iterator[None]:
    """Restoring one saved state: whatever it fails with becomes one CheckpointError naming the file
    and the state (a tampered or garbled train state never resumes silently or with a traceback)."""
    try:
        yield
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: the saved '{name}' state is invalid: {exc}") from None
    except (ClusterLMError, ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError,
            OverflowError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(f"{where}: the saved '{name}' state is invalid ({type(exc).__name__}: {detail})") from None


class LocalBackend:
    """One process writes everything: safetensors weights + `train_state.pt`."""

    collective = False

    def write(self, directory: Path, model: nn.Module, model_cfg: ModelConfig, tokenizer_path: Path | None,
              meta: dict[str, Any], states: dict[str, Stateful]) -> None:
        save_model_dir(directory, model, model_cfg, tokenizer_path, meta)
        buffer = io.BytesIO()
        torch.save({name: obj.state_dict() for name, obj in states.items()}, buffer)
        atomic_write_bytes(directory / TRAIN_STATE_FILE, buffer.getbuffer())  # a view: no copy of the bytes

    def read(self, directory: Path, model: nn.Module, states: dict[str, Stateful]) -> None:
        if is_dcp_checkpoint(directory):  # written by a distributed run: DCP reshards it into this model
            DCPBackend().read(directory, model, states)
        else:
            _read_local(directory, model, states)


def _gather_states(model: nn.Module, states: dict[str, Stateful]) -> dict[str, Any]:
    out: dict[str, Any] = {MODEL_KEY: model_state(model)}
    for name, obj in states.items():
        out[name] = optimizer_state(model, obj) if isinstance(obj, torch.optim.Optimizer) else obj.state_dict()
    return out


def _apply_states(model: nn.Module, states: dict[str, Stateful], loaded: dict[str, Any], where: Path) -> None:
    load_model_state(model, loaded[MODEL_KEY])
    for name, obj in states.items():
        if name not in loaded:
            raise CheckpointError(f"checkpoint lacks state for: {name}")
        with _restoring(where, name):
            if isinstance(obj, torch.optim.Optimizer):
                load_optimizer_state(model, obj, loaded[name])
            else:
                obj.load_state_dict(loaded[name])


class DCPBackend:
    """Sharded runs: every rank writes its shards (`collective`); rank 0 writes the JSON parts."""

    collective = True

    def __init__(self, is_main: bool = True, group: Any = None, async_save: bool = False) -> None:
        self.is_main = is_main
        self.group = group
        self.writer = DCPWriter(group, async_save)

    def write(self, directory: Path, model: nn.Module, model_cfg: ModelConfig, tokenizer_path: Path | None,
              meta: dict[str, Any], states: dict[str, Stateful]) -> PendingSave | None:
        """All ranks: shards into `directory/dcp`; rank 0: JSON state, tokenizer, meta.json (last).
        With async saving returns a pending handle whose `wait()` completes the write (the tensors
        are already staged, so training may change the weights meanwhile)."""
        directory = Path(directory)
        skeleton, tensors = split_tensors(_gather_states(model, states))

        def finish() -> None:
            if self.is_main:
                atomic_write_json(directory / TRAIN_STATE_JSON, skeleton)
                if tokenizer_path is not None:
                    atomic_write_bytes(directory / TOKENIZER_FILE, Path(tokenizer_path).read_bytes())
                write_meta(directory, new_meta(model_cfg, "dcp", **meta))

        return self.writer.save(directory, tensors, finish)

    def read(self, directory: Path, model: nn.Module, states: dict[str, Stateful]) -> None:
        """A DCP checkpoint (any world size) or a single-process one, into this run's layout."""
        directory = Path(directory)
        if not is_dcp_checkpoint(directory):
            _read_local(directory, model, states)
            return
        skeleton_now, tensors = split_tensors(_gather_states(model, states))
        saved = _read_state_json(directory)
        load_tensors(directory, tensors, self.group)
        # Tensor leaves were loaded in place (resharded to this run's layout) into the template's
        # tensors. The model's and optimizer's structure is this run's (a pipeline rank saved only
        # its own stages' names); every other value comes from the checkpoint.
        wanted = {name: skeleton_now[name] if name == MODEL_KEY or isinstance(states.get(name), torch.optim.Optimizer)
                  else saved.get(name) for name in skeleton_now}
        missing = [name for name, value in wanted.items() if value is None and name not in saved]
        if missing:
            raise CheckpointError(f"checkpoint lacks state for: {', '.join(missing)}")
        try:
            merged = merge_tensors(wanted, tensors)
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint does not match this run's state ({exc})") from None
        _apply_states(model, states, merged, directory / TRAIN_STATE_JSON)


def _read_state_json(directory: Path) -> Any:
    path = directory / TRAIN_STATE_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{directory} has no {TRAIN_STATE_JSON}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is corrupted (not valid JSON)") from None
