"""Timing a matmul: the measurement behind CPU precision `auto`, MFU peaks and the cluster probe."""

from __future__ import annotations

import time

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_flops(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", n: int = 1024,
                         min_seconds: float = 0.5) -> float:
    """Sustained FLOP/s of an n×n×n matmul on `device` in `dtype` (best of repeated timings).

    Runs under `fork_rng`, so the random operands never shift the caller's RNG (a training run's
    dropout masks must not depend on whether it measured something)."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)
    synchronize(device)
    torch.matmul(a, b)  # warm-up (thread pool, kernels)
    synchronize(device)
    best = float("inf")
    deadline = time.perf_counter() + min_seconds
    reps = 0
    while reps < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return 2.0 * n**3 / best


def cpu_matmul_speeds(n: int = 256, min_seconds: float = 0.05) -> tuple[float, float]:
    """(fp32, bf16) FLOP/s of a small CPU matmul; ~0.2 s even where bf16 is emulated."""
    fp32 = measure_matmul_flops(torch.float32, "cpu", n=n, min_seconds=min_seconds)
    bf16 = measure_matmul_flops(torch.bfloat16, "cpu", n=n, min_seconds=min_seconds)
    return fp32, bf16
