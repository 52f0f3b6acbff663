"""Peak FLOP/s of the device a run actually uses — the denominator of MFU.

Known GPUs come from the hardware catalog (vendor datasheet figures). Anything
else, CPUs included, is measured with a large matmul in the run's precision, and
the figure is cached in the run dir so a resumed run reports MFU against the
same peak. Never a hard-coded figure for a device we are not running on.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from clusterlm.cluster.catalog import peak_flops_for_device
from clusterlm.fsio import atomic_write_json
from clusterlm.runtime.measure import measure_matmul_flops
from clusterlm.runtime.precision import DTYPES

PEAK_CACHE_FILE = "peak_flops.json"


@dataclass(frozen=True)
class PeakFlops:
    flops: float  # FLOP/s
    source: str  # "catalog" | "measured" | "cached"
    device_name: str
    dtype: str


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"cpu:{cpu}:{torch.get_num_threads()}threads"


def _catalog_peak(name: str, dtype: str) -> float | None:
    try:
        return peak_flops_for_device(name, dtype)
    except Exception:  # noqa: BLE001 - an unknown/odd name just means "measure instead"
        return None


def device_peak_flops(device: torch.device, dtype: str, cache_dir: str | Path | None = None,
                      measure_n: int = 1024) -> PeakFlops:
    """Peak FLOP/s for `device` in `dtype` ("fp32" | "bf16" | "fp16")."""
    name = device_name(device)
    if device.type == "cuda":
        peak = _catalog_peak(name, dtype)
        if peak:
            return PeakFlops(float(peak), "catalog", name, dtype)
    cache = Path(cache_dir) / PEAK_CACHE_FILE if cache_dir is not None else None
    key = f"{name}|{dtype}"
    cached: dict[str, float] = {}
    if cache is not None and cache.is_file():
        try:
            cached = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            cached = {}
        if isinstance(cached.get(key), (int, float)) and cached[key] > 0:
            return PeakFlops(float(cached[key]), "cached", name, dtype)
    torch_dtype = DTYPES[dtype]
    n = measure_n if device.type != "cuda" else max(measure_n, 4096)
    flops = measure_matmul_flops(torch_dtype, device, n=n)  # leaves the run's RNG untouched
    if cache is not None and os.access(cache.parent, os.W_OK):
        atomic_write_json(cache, {**cached, key: flops})
    return PeakFlops(flops, "measured", name, dtype)


_MEMO: dict[tuple[str, str], PeakFlops] = {}


def cached_device_peak(device: torch.device, dtype: str, run_dir: Path) -> PeakFlops:
    """`device_peak_flops`, measured at most once per process (and cached in the run dir)."""
    key = (device_name(device), dtype)
    if key not in _MEMO:
        _MEMO[key] = device_peak_flops(device, dtype, cache_dir=run_dir)
    return _MEMO[key]
