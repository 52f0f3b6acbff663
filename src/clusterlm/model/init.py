"""Initial weights that do not depend on how a parameter is split across processes.

Every parameter is initialised row by row: row r of parameter `name` is drawn from torch's CPU
generator seeded with a hash of (seed, name, r). A process that holds rows [r0, r1) and columns
[c0, c1) of a parameter — an FSDP2 shard, a tensor-parallel slice, a pipeline stage's layers —
draws exactly its rows and keeps its columns, so every layout starts from the weights one
process would have, bit for bit, without any process ever materialising the whole model.

(DTensor's own random ops cannot promise that on CPU: its offset-based generator needs a
counter-based RNG, which only accelerators have.)

A 1-D parameter counts as a column (n rows of one value). `param_init` in the model files says
which distribution each parameter gets; `init_parameters_` applies it to whatever part of the
model this process holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

_GOLDEN = 0x9E3779B97F4A7C15  # row stride of the seeds: consecutive rows get unrelated streams
_WRAPPERS = ("_checkpoint_wrapped_module.", "_orig_mod.", "module.")


@dataclass(frozen=True)
class Init:
    kind: str  # "normal" (scale = std) | "uniform" (scale = bound, U(−b, b)) | "constant" (scale = value)
    scale: float = 0.0
    # (start, stop, value): rows overwritten with a constant after drawing (an LSTM's forget-gate bias)
    row_constants: tuple[tuple[int, int, float], ...] = ()


def clean_fqn(name: str) -> str:
    """A parameter name without activation-checkpoint / compile / DDP wrapper prefixes."""
    for wrapper in _WRAPPERS:
        name = name.replace(wrapper, "")
    return name


def _base_seed(seed: int, name: str) -> int:
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _local_block(param: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """(this process's part as a 2-D view, its first global row, first global column, global columns)."""
    local, offset = param, (0,) * param.dim()
    if hasattr(param, "to_local") and hasattr(param, "placements"):  # a DTensor: a slice of a larger tensor
        # Imported here: only sharded parameters need it, and torch.distributed.tensor is slow to import.
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        local = param.to_local()
        _, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
    if param.dim() == 1:
        return local.view(-1, 1), offset[0], 0, 1
    if param.dim() != 2:
        raise ValueError(f"row-wise initialisation handles 1-D and 2-D parameters, not shape {tuple(param.shape)}")
    return local, offset[0], offset[1], param.shape[1]


@torch.no_grad()
def init_(param: torch.Tensor, init: Init, seed: int, name: str) -> None:
    """Fill the part of `param` this process holds as `init` would fill the whole of it."""
    block, row0, col0, full_cols = _local_block(param)
    rows, cols = block.shape
    if init.kind == "constant":
        block.fill_(init.scale)
    else:
        # Draw straight into the parameter when this process holds whole rows on the CPU;
        # otherwise draw whole rows on the CPU and keep this process's columns.
        in_place = (col0 == 0 and cols == full_cols and block.device.type == "cpu"
                    and block.dtype == torch.float32 and block.is_contiguous())
        target = block if in_place else torch.empty(rows, full_cols, dtype=torch.float32)
        base, generator = _base_seed(seed, name), torch.Generator()
        for i in range(rows):
            generator.manual_seed((base + (row0 + i) * _GOLDEN) % 2**64)
            if init.kind == "normal":
                target[i].normal_(0.0, init.scale, generator=generator)
            else:
                target[i].uniform_(-init.scale, init.scale, generator=generator)
        if not in_place:
            block.copy_(target[:, col0 : col0 + cols])
    for start, stop, value in init.row_constants:
        lo, hi = max(start, row0), min(stop, row0 + rows)
        if lo < hi:
            block[lo - row0 : hi - row0].fill_(value)


def init_parameters_(model: nn.Module, seed: int, spec: Callable[[str], Init]) -> None:
    """Initialise every parameter `model` holds (tied ones once) with `spec(clean name)`."""
    for name, param in model.named_parameters():
        clean = clean_fqn(name)
        init_(param, spec(clean), seed, clean)
