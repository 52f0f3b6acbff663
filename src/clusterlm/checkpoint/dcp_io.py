"""Reading and writing tensors with `torch.distributed.checkpoint` (DCP), safely and quietly.

Every rank writes its own shards into `CKPT/dcp/` and DCP's planner records which global slice
each holds, so a load at another world size (or into one plain process) reshards. Only tensors
go through DCP here; reads use `safety.SafeReader` and `safety.TensorOnlyPlanner`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from clusterlm.checkpoint.layout import DCP_DIR
from clusterlm.checkpoint.safety import SafeReader, TensorOnlyPlanner
from clusterlm.errors import CheckpointError


def is_dcp_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / DCP_DIR / ".metadata").is_file()


@contextlib.contextmanager
def _single_process_ok() -> Iterator[None]:
    """DCP warns when it runs without a process group; saving from or loading into one process
    (export, eval, resuming at world size 1) is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def load_tensors(directory: Path, tensors: dict[str, torch.Tensor], group: Any = None) -> None:
    """Fill `tensors` in place (each in this process's layout) from `directory/dcp`."""
    reader = SafeReader(str(Path(directory) / DCP_DIR))
    # A garbled index fails here as one CheckpointError; inside dcp.load torch would first log the
    # failure with its traceback (a logger warning with exc_info) and only then give up.
    reader.read_metadata()
    try:
        with _single_process_ok():
            dcp.load(tensors, storage_reader=reader, planner=TensorOnlyPlanner(), process_group=group)
    except CheckpointError:
        raise
    # DCP wraps per-rank failures in CheckpointException (a BaseException), with every rank's
    # traceback in its text; the last line is the cause.
    except (Exception, CheckpointException) as exc:  # noqa: BLE001
        text = str(exc).strip()
        first = text.splitlines()[-1][:300] if text else type(exc).__name__
        raise CheckpointError(f"{Path(directory) / DCP_DIR}: cannot load the checkpoint ({first})") from None


class PendingSave:
    """An in-flight `async_save`; `wait()` blocks until the shards are on disk, then finishes."""

    def __init__(self, future: Any, finish: Callable[[], None]) -> None:
        self.future, self.finish = future, finish

    def wait(self) -> None:
        result = self.future.result()
        if hasattr(result, "upload_completion"):  # newer DCP returns (staging, upload) futures
            result.upload_completion.result()
        self.finish()


class DCPWriter:
    """Saves tensors into `directory/dcp`, synchronously or in the background (`async_save`)."""

    def __init__(self, group: Any = None, async_save: bool = False) -> None:
        self.group = group
        self.async_save = async_save
        self._async_group: Any = None

    def save(self, directory: Path, tensors: dict[str, torch.Tensor], finish: Callable[[], None]) -> PendingSave | None:
        writer = dcp.FileSystemWriter(str(Path(directory) / DCP_DIR))
        if self.async_save:
            if self._async_group is None:
                # Background saves plan over their own gloo group, so they never interleave with
                # the training loop's collectives (torchtitan does the same).
                self._async_group = dist.new_group(backend="gloo")
            future = dcp.async_save(tensors, storage_writer=writer, process_group=self._async_group)
            return PendingSave(future, finish)
        with _single_process_ok():
            dcp.save(tensors, storage_writer=writer, process_group=self.group)
        finish()
        return None


def dedupe_shared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop all but the first name of tensors sharing storage (a tied head): load once, shared anyway."""
    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():
        local = value.to_local() if hasattr(value, "to_local") else value
        ptr = local.data_ptr() if local.device.type != "meta" else id(value)
        if ptr in seen and local.numel() > 0:
            continue
        seen.add(ptr)
        out[key] = value
    return out
