"""Will it fit? Free memory of a device, checked before a model is allocated.

A model config within the schema's ranges (`config/limits.py`) can still need more memory than the
machine has: `model.d_model=65536` asks a CPU for terabytes. Allocating first fails late — with an
allocator's dump, or worse, with the kernel's OOM killer and no message at all (Linux overcommits,
so a large `torch.empty` succeeds and the process dies when the pages are touched). So the bytes a
model needs are compared with what the device has free before anything is allocated.
"""

from __future__ import annotations

import psutil
import torch

from clusterlm.errors import ConfigError

_GIB = float(1 << 30)


def free_bytes(device: torch.device) -> int | None:
    """Memory this process could still allocate on `device` (None where unknown)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        return int(psutil.virtual_memory().available)
    return None


def require_memory(need_bytes: int, device: torch.device, what: str, fix: str) -> None:
    """ConfigError (one line: the sizes and `fix`) if `need_bytes` exceed the free memory of `device`."""
    free = free_bytes(device)
    if free is not None and need_bytes > free:
        raise ConfigError(f"{what} needs {need_bytes / _GIB:,.1f} GiB, but {device} has {free / _GIB:,.1f} GiB "
                          f"free; {fix}")
