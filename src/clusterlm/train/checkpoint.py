"""Training checkpoints: atomic step directories, a `latest` pointer, rotation.

Layout (see docs/training.md)::

    RUN/checkpoints/step-0000200/   model.safetensors, tokenizer.json, meta.json, train_state.pt
    RUN/latest                      "step-0000200" — the newest complete checkpoint

A checkpoint is written into a hidden temporary sibling and renamed into place in
one step, then `latest` is replaced atomically, then old checkpoints beyond
`keep_last` are deleted. A process killed at any point leaves the previous
checkpoint and pointer intact (at worst a stale `.step-*.tmp` dir, removed on the
next start).

What goes *into* a checkpoint directory is the backend's job; the single-process
`LocalBackend` writes the model with `clusterlm.model.serialization` and the rest
with `torch.save`. A distributed backend (torch.distributed.checkpoint) implements
the same two methods.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from clusterlm.errors import CheckpointError
from clusterlm.fsio import atomic_dir, atomic_write_text, fsync_dir
from clusterlm.model.config import ModelConfig
from clusterlm.train.world import World

TRAIN_STATE_FILE = "train_state.pt"
LATEST_FILE = "latest"
CHECKPOINTS_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CheckpointBackend(Protocol):
    """Writes/reads the contents of one checkpoint directory."""

    def write(
        self,
        directory: Path,
        model: nn.Module,
        model_cfg: ModelConfig,
        tokenizer_path: Path | None,
        meta: dict[str, Any],
        states: dict[str, Stateful],
    ) -> None: ...

    def read(self, directory: Path, model: nn.Module, states: dict[str, Stateful]) -> None: ...


class LocalBackend:
    """One process writes everything: safetensors weights + `train_state.pt`."""

    def write(
        self,
        directory: Path,
        model: nn.Module,
        model_cfg: ModelConfig,
        tokenizer_path: Path | None,
        meta: dict[str, Any],
        states: dict[str, Stateful],
    ) -> None:
        from clusterlm.model.serialization import save_model_dir

        save_model_dir(directory, model, model_cfg, tokenizer_path, meta)
        buffer = io.BytesIO()
        torch.save({name: obj.state_dict() for name, obj in states.items()}, buffer)
        path = directory / TRAIN_STATE_FILE
        with open(path, "wb") as fh:
            fh.write(buffer.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())

    def read(self, directory: Path, model: nn.Module, states: dict[str, Stateful]) -> None:
        from clusterlm.distributed.checkpoint import DCPBackend, is_dcp_checkpoint

        if is_dcp_checkpoint(directory):  # written by a distributed run: DCP reshards it into this model
            DCPBackend().read(directory, model, states)
            return
        load_weights(directory, model)
        saved = load_train_state(directory)
        missing = [name for name in states if name not in saved]
        if missing:
            raise CheckpointError(f"{directory / TRAIN_STATE_FILE} lacks state for: {', '.join(missing)}")
        for name, obj in states.items():
            obj.load_state_dict(saved[name])


def load_weights(source: str | Path, model: nn.Module) -> Path:
    """Copy the weights of a checkpoint (verified by `load_model_dir`: sha256, shapes) into `model`.

    `model` may be wrapped in place (activation checkpointing) or on another device; its
    state-dict keys are those of the plain model. Returns the resolved checkpoint path.
    """
    from clusterlm.model.serialization import load_model_dir, load_state

    loaded = load_model_dir(source, device="cpu")
    load_state(model, loaded.model.state_dict(), loaded.path)
    return loaded.path


def load_train_state(directory: Path) -> dict[str, Any]:
    """`train_state.pt` with `weights_only=True`: tensors and plain data, never code."""
    path = Path(directory) / TRAIN_STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {TRAIN_STATE_FILE} (weights-only checkpoint?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip failure means a bad file
        raise CheckpointError(f"{path} is corrupted or unreadable ({type(exc).__name__})") from None


class CheckpointManager:
    def __init__(self, run_dir: str | Path, keep_last: int, world: World | None = None,
                 backend: CheckpointBackend | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / CHECKPOINTS_DIR
        self.keep_last = keep_last
        self.world = world or World()
        self.backend: CheckpointBackend = backend or LocalBackend()
        self._pending: tuple[Any, Path, Path] | None = None  # an asynchronous collective save in flight

    # -- discovery ---------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """Steps of the complete checkpoints present (hidden temp dirs excluded), ascending."""
        if not self.root.is_dir():
            return []
        found = (_STEP_DIR.match(p.name) for p in self.root.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def latest(self) -> Path | None:
        """The checkpoint `latest` names; if the pointer is missing or stale, the newest one."""
        pointer = self.run_dir / LATEST_FILE
        if pointer.is_file():
            name = pointer.read_text(encoding="utf-8").strip()
            if _STEP_DIR.match(name) and (self.root / name).is_dir():
                return self.root / name
        steps = self.steps()
        return self.root / checkpoint_name(steps[-1]) if steps else None

    def remove_stale_temporaries(self) -> int:
        """Delete leftovers of a save that was killed midway (never a complete checkpoint)."""
        if not self.world.is_main or not self.root.is_dir():
            return 0
        stale = [p for p in self.root.iterdir() if p.name.startswith(".step-")]
        for p in stale:
            shutil.rmtree(p, ignore_errors=True)
        return len(stale)

    # -- save / load -------------------------------------------------------------------------
    def save(
        self,
        step: int,
        model: nn.Module,
        model_cfg: ModelConfig,
        tokenizer_path: Path | None,
        meta: dict[str, Any],
        states: dict[str, Stateful],
    ) -> Path:
        if getattr(self.backend, "collective", False):
            return self._save_collective(step, model, model_cfg, tokenizer_path, meta, states)
        name = checkpoint_name(step)
        final = self.root / name
        if self.world.is_main:
            latest = self.latest()
            if not (latest is not None and latest.name == name):
                # A same-step dir that is not `latest` is a leftover of a crash after its
                # rename; replacing it is safe because `latest` still names an older one.
                with atomic_dir(final, overwrite=True) as tmp:
                    self.backend.write(tmp, model, model_cfg, tokenizer_path, {**meta, "step": step}, states)
                atomic_write_text(self.run_dir / LATEST_FILE, name + "\n")
                self.prune()
        self.world.barrier()
        return final

    def _save_collective(self, step: int, model: nn.Module, model_cfg: ModelConfig, tokenizer_path: Path | None,
                         meta: dict[str, Any], states: dict[str, Stateful]) -> Path:
        """Every rank writes its shards into one shared temporary dir (torch.distributed.checkpoint);
        rank 0 renames it into place and moves `latest` once all ranks are done. An asynchronous
        backend returns a handle instead, and the publishing waits for `wait()` (or the next save)."""
        self.wait()
        name = checkpoint_name(step)
        final = self.root / name
        latest = self.latest()
        if latest is not None and latest.name == name:
            self.world.barrier()
            return final
        tmp = self.root / f".{name}.tmp"  # the same path on every rank: the run dir is shared
        if self.world.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.world.barrier()
        handle = self.backend.write(tmp, model, model_cfg, tokenizer_path, {**meta, "step": step}, states)
        self._pending = (handle, tmp, final)
        if handle is None:
            self.wait()
        return final

    def wait(self) -> None:
        """Publish the collective save in flight, if any (blocks until its shards are written)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        handle, tmp, final = pending
        if handle is not None:
            handle.wait()
        self.world.barrier()  # every rank's shards are on disk
        if self.world.is_main:
            old = final.with_name(f".{final.name}.old") if final.exists() else None
            if old is not None:  # a leftover of a crash after its rename; `latest` names an older one
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
            os.replace(tmp, final)
            fsync_dir(self.root)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            atomic_write_text(self.run_dir / LATEST_FILE, final.name + "\n")
            self.prune()
        self.world.barrier()

    def load(self, directory: Path, model: nn.Module, states: dict[str, Stateful]) -> None:
        self.backend.read(directory, model, states)

    def prune(self) -> list[int]:
        """Delete the oldest checkpoints beyond `keep_last` (never the one `latest` names)."""
        latest = self.latest()
        steps = self.steps()
        doomed = steps[: max(0, len(steps) - self.keep_last)]
        removed = []
        for step in doomed:
            path = self.root / checkpoint_name(step)
            if latest is not None and path == latest:
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(step)
        if removed:
            fsync_dir(self.root)
        return removed
