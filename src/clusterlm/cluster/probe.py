"""Measure this machine: matmul FLOP/s (used for MFU by training and for `cluster probe`)."""

from __future__ import annotations

import time

import torch


def measure_matmul_flops(
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    n: int = 1024,
    min_seconds: float = 0.5,
) -> float:
    """Sustained FLOP/s of an n×n×n matmul on `device` in `dtype` (best of repeated timings)."""
    device = torch.device(device)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    _sync(device)
    torch.matmul(a, b)  # warm-up (thread pool, kernels)
    _sync(device)
    best = float("inf")
    deadline = time.perf_counter() + min_seconds
    reps = 0
    while reps < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        torch.matmul(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return 2.0 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
