"""Device and numeric precision: pick them from the config and what the hardware can do.

`precision: auto` means bf16 autocast where bf16 matmuls are actually fast, fp32
elsewhere. GPUs report bf16 support directly. CPUs differ wildly (an AVX2 core runs
bf16 matmuls ~50× slower than fp32, an AVX-512 BF16/AMX core faster), so on CPU we
time both in a short matmul probe instead of assuming either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from clusterlm.errors import ConfigError
from clusterlm.runtime.collectives import Collectives
from clusterlm.runtime.measure import cpu_matmul_speeds

# On CPU, bf16 autocast also casts activations back and forth; it only pays off when
# its matmuls are clearly faster than fp32 ones.
CPU_BF16_MIN_SPEEDUP = 1.5

# The torch dtype of each precision name (train.precision, the FSDP and compression dtypes, peak FLOPs).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" | "bf16" | "fp16"
    reason: str  # why this precision was chosen (logged in the run summary)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def uses_autocast(self) -> bool:
        return self.name != "fp32"

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range."""
        return self.name == "fp16"

    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        """Mixed precision for the forward pass: weights stay fp32, matmuls run in `dtype`."""
        if not self.uses_autocast:
            yield
            return
        with torch.autocast(device_type=device.type, dtype=self.dtype):
            yield


def select_precision(requested: str, device: torch.device, collectives: Collectives | None = None,
                     fp16_ok: bool = True) -> Precision:
    """Resolve `train.precision` for `device`; impossible combinations are ConfigErrors.

    `auto` on a CPU times bf16 against fp32. Timings differ from rank to rank (and with load), so
    with several processes rank 0 measures and every rank takes its answer: ranks never disagree.
    `fp16_ok=False` (a layout without a sharded gradient scaler: FSDP2, tensor parallel) keeps
    `auto` from choosing fp16."""
    if requested == "fp32":
        return Precision("fp32", "requested")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "auto":
            if bf16_ok:
                return Precision("bf16", "auto: GPU supports bf16")
            if not fp16_ok:
                return Precision("fp32", "auto: GPU lacks bf16 and fp16 needs an unsharded gradient scaler")
            return Precision("fp16", "auto: GPU lacks bf16, using fp16 with loss scaling")
        if requested == "bf16" and not bf16_ok:
            raise ConfigError("train.precision=bf16: this GPU does not support bf16; use fp16 or fp32")
        return Precision(requested, "requested")
    if requested == "fp16":
        raise ConfigError(f"train.precision=fp16 needs a CUDA GPU (device is {device.type}); use bf16 or fp32")
    if requested == "bf16":
        return Precision("bf16", "requested")
    # auto on CPU: measure, never assume.
    collectives = collectives or Collectives()
    name, reason = collectives.decide_on_main(_measured_cpu_choice)
    return Precision(name, reason)


def _measured_cpu_choice() -> tuple[str, str]:
    fp32, bf16 = cpu_matmul_speeds()
    speedup = bf16 / fp32
    if speedup >= CPU_BF16_MIN_SPEEDUP:
        return "bf16", f"auto: CPU bf16 matmul measured {speedup:.1f}× fp32"
    return "fp32", f"auto: CPU bf16 matmul measured {speedup:.2f}× fp32"
