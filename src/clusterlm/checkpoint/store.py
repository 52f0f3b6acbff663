"""`CheckpointStore`: the only code that knows a run dir's checkpoint layout.

    RUN/checkpoints/step-0000200/   one complete checkpoint (contents: `backends.py`)
    RUN/latest                      "step-0000200" — the newest complete checkpoint

A save goes into a hidden temporary sibling, which is renamed into place in one step; then
`latest` is replaced atomically; then checkpoints beyond `keep_last` are deleted. A process
killed at any point leaves the previous checkpoint and pointer intact (at worst a hidden
`.step-*.tmp` dir or `.latest.*.tmp` file, removed by `remove_stale_temporaries` on the next start).

For a collective (DCP) save every rank writes its shards into the same temporary dir; rank 0
publishes it once all ranks are done. An asynchronous save publishes on `wait()` (or the next save).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from clusterlm.checkpoint.backends import CheckpointBackend, LocalBackend, Stateful
from clusterlm.checkpoint.dcp_io import PendingSave
from clusterlm.checkpoint.layout import (
    CHECKPOINTS_DIR,
    LATEST_FILE,
    checkpoint_name,
    checkpoint_steps,
    latest_checkpoint,
)
from clusterlm.config.model import ModelConfig
from clusterlm.fsio import atomic_dir, atomic_write_text, fsync_dir


def _no_barrier() -> None:
    """One process: nobody to wait for."""


class CheckpointStore:
    def __init__(self, run_dir: str | Path, keep_last: int, backend: CheckpointBackend | None = None, *,
                 is_main: bool = True, barrier: Callable[[], None] = _no_barrier) -> None:
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / CHECKPOINTS_DIR
        self.keep_last = keep_last
        self.backend: CheckpointBackend = backend or LocalBackend()
        self.is_main = is_main
        self.barrier = barrier
        self._pending: tuple[PendingSave | None, Path, Path] | None = None  # a collective save in flight

    # -- discovery ---------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """Steps of the complete checkpoints present (hidden temp dirs excluded), ascending."""
        return checkpoint_steps(self.run_dir)

    def latest(self) -> Path | None:
        """The checkpoint `latest` names; if the pointer is missing or stale, the newest one."""
        return latest_checkpoint(self.run_dir)

    def remove_stale_temporaries(self) -> int:
        """Delete leftovers of a save, pointer update or atomic write that was killed midway: hidden
        `.step-*` dirs, `.latest.*` files and the hidden `.NAME.*.tmp` files `fsio` writes in the run
        dir and its `plots/` (rank 0 only, and only while holding the run dir's lock)."""
        if not self.is_main:
            return 0
        stale = [p for p in self.root.iterdir() if p.name.startswith(".step-")] if self.root.is_dir() else []
        for folder in (self.run_dir, self.run_dir / "plots"):
            if folder.is_dir():
                stale += [p for p in folder.iterdir() if p.name.startswith(f".{LATEST_FILE}.")
                          or (p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file())]
        for p in stale:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        return len(stale)

    # -- save / load -------------------------------------------------------------------------
    def save(self, step: int, model: nn.Module, model_cfg: ModelConfig, tokenizer_path: Path | None,
             meta: dict[str, Any], states: dict[str, Stateful]) -> Path:
        if self.backend.collective:
            return self._save_collective(step, model, model_cfg, tokenizer_path, meta, states)
        name = checkpoint_name(step)
        final = self.root / name
        if self.is_main:
            latest = self.latest()
            if not (latest is not None and latest.name == name):
                # A same-step dir that is not `latest` is a leftover of a crash after its
                # rename; replacing it is safe because `latest` still names an older one.
                with atomic_dir(final, overwrite=True) as tmp:
                    self.backend.write(tmp, model, model_cfg, tokenizer_path, {**meta, "step": step}, states)
                self._publish_pointer(name)
        self.barrier()
        return final

    def _save_collective(self, step: int, model: nn.Module, model_cfg: ModelConfig, tokenizer_path: Path | None,
                         meta: dict[str, Any], states: dict[str, Stateful]) -> Path:
        self.wait()
        name = checkpoint_name(step)
        final = self.root / name
        latest = self.latest()
        if latest is not None and latest.name == name:
            self.barrier()
            return final
        tmp = self.root / f".{name}.tmp"  # the same path on every rank: the run dir is shared
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
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
        self.barrier()  # every rank's shards are on disk
        if self.is_main:
            old = final.with_name(f".{final.name}.old") if final.exists() else None
            if old is not None:  # a leftover of a crash after its rename; `latest` names an older one
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
            os.replace(tmp, final)
            fsync_dir(self.root)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            self._publish_pointer(final.name)
        self.barrier()

    def _publish_pointer(self, name: str) -> None:
        atomic_write_text(self.run_dir / LATEST_FILE, name + "\n")
        self.prune()

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
