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

# On CPU, bf16 autocast also casts activations back and forth; it only pays off when
# its matmuls are clearly faster than fp32 ones.
CPU_BF16_MIN_SPEEDUP = 1.5

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str) -> torch.device:
    """`auto` → the first CUDA GPU if present, else CPU; explicit devices are checked."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device '{spec}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but no CUDA GPU is available; use train.device=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device {spec}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    elif device.type not in ("cpu", "mps"):
        raise ConfigError(f"train.device: unsupported device type '{device.type}'")
    return device


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" | "bf16" | "fp16"
    reason: str  # why this precision was chosen (logged in the run summary)

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

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


def select_precision(requested: str, device: torch.device) -> Precision:
    """Resolve `train.precision` for `device`; impossible combinations are ConfigErrors."""
    if requested == "fp32":
        return Precision("fp32", "requested")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "auto":
            if bf16_ok:
                return Precision("bf16", "auto: GPU supports bf16")
            return Precision("fp16", "auto: GPU lacks bf16, using fp16 with loss scaling")
        if requested == "bf16" and not bf16_ok:
            raise ConfigError("train.precision=bf16: this GPU does not support bf16; use fp16 or fp32")
        return Precision(requested, "requested")
    if requested == "fp16":
        raise ConfigError(f"train.precision=fp16 needs a CUDA GPU (device is {device.type}); use bf16 or fp32")
    if requested == "bf16":
        return Precision("bf16", "requested")
    # auto on CPU (or other non-CUDA devices): measure, never assume.
    if device.type != "cpu":
        return Precision("fp32", f"auto: fp32 on {device.type}")
    fp32, bf16 = cpu_matmul_speeds()
    speedup = bf16 / fp32
    if speedup >= CPU_BF16_MIN_SPEEDUP:
        return Precision("bf16", f"auto: CPU bf16 matmul measured {speedup:.1f}× fp32")
    return Precision("fp32", f"auto: CPU bf16 matmul measured {speedup:.2f}× fp32")


def cpu_matmul_speeds(n: int = 256, min_seconds: float = 0.05) -> tuple[float, float]:
    """(fp32, bf16) FLOP/s of a small CPU matmul; ~0.2 s even where bf16 is emulated."""
    from clusterlm.cluster.probe import measure_matmul_flops

    with torch.random.fork_rng(devices=[]):  # the probe's random matrices must not shift the run's RNG
        fp32 = measure_matmul_flops(torch.float32, "cpu", n=n, min_seconds=min_seconds)
        bf16 = measure_matmul_flops(torch.bfloat16, "cpu", n=n, min_seconds=min_seconds)
    return fp32, bf16
