"""A probe's measurements (`ProbeResult`) and the cluster spec they describe (`probe_spec`).

Kept apart from the measurements themselves (`probe.py`, which needs torch) so that a cached
probe (`--cluster local`) turns into a spec without importing torch.
"""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def cpu_count() -> int:
    """CPUs this process may run on (a container or `taskset` may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_info() -> dict[str, str]:
    """The first processor's entries in /proc/cpuinfo (empty where there is no such file)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())  # the first processor's entry
    except OSError:
        pass
    return info


def cpu_model(info: dict[str, str] | None = None) -> str:
    """The CPU's model name (`info`: `cpu_info()` already read), else what `platform` says."""
    info = cpu_info() if info is None else info
    return info.get("model name") or platform.processor() or platform.machine()


@dataclass
class ProbeResult:
    device: str
    device_name: str
    threads: int
    matmul_flops: dict[str, float] = field(default_factory=dict)
    gemm_table: list[tuple[float, float]] = field(default_factory=list)  # (GFLOP, FLOP/s) fp32
    attention_flops: float | None = None
    memory_bandwidth: float = 0.0
    elementwise_efficiency: float = 1.0  # element-wise kernels' speed relative to a copy
    kernel_overhead_s: float = 0.0
    disk_write: float | None = None
    disk_read: float | None = None
    disk_dir: str | None = None
    allreduce_latency_s: float | None = None
    allreduce_bus_bandwidth: float | None = None
    runtime_overhead_gib: float | None = None
    host_memory_gib: float = 0.0
    cpu_model: str = ""
    cpu_cores: int = 1
    disk_free_tb: float | None = None
    seconds: float = 0.0
    load_average: float | None = None  # 1-minute load when the probe started (others' work skews timings)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_spec(res: ProbeResult, name: str = "this machine (probed)") -> dict[str, Any]:
    """A cluster spec (plain dict, `ClusterSpec` schema) describing the probed machine."""
    # The "peak" is the sustained (median) rate of a large GEMM; the table says how other sizes
    # compare with the table's largest GEMM (small GEMMs that live in cache can even beat it,
    # hence the cap above 1).
    peak_fp32 = res.matmul_flops.get("fp32") or max(f for _, f in res.gemm_table)
    largest = max(res.gemm_table)[1] if res.gemm_table else peak_fp32
    table = [[round(g, 6), round(min(1.5, f / largest), 4)] for g, f in res.gemm_table]
    is_cpu = res.device.startswith("cpu")
    accelerator: dict[str, Any] = {
        "name": "cpu-probed" if is_cpu else "gpu-probed",
        "display": f"{res.device_name} ({res.threads} threads)" if is_cpu else res.device_name,
        "kind": "cpu" if is_cpu else "gpu",
        "peak_tflops": {k: round(v / 1e12, 6) for k, v in res.matmul_flops.items()},
        "memory_gib": round(res.host_memory_gib, 2),
        "memory_bandwidth_gb_s": round(res.memory_bandwidth / 1e9, 3),
        # The peak is what this machine sustains (efficiency 1; the measured GEMM table carries the
        # size dependence); element-wise kernels reach the measured fraction of the copy bandwidth.
        "gemm_efficiency": 1.0,
        "memory_efficiency": round(max(0.01, res.elementwise_efficiency), 4),
        "kernel_overhead_us": round(res.kernel_overhead_s * 1e6, 2),
        "gemm_table": table,
        "tdp_w": 65.0 if is_cpu else 300.0,
        "source": f"clusterlm cluster probe, {datetime.date.today().isoformat()}",
    }
    if res.attention_flops:
        accelerator["attention_efficiency"] = round(min(1.0, res.attention_flops / peak_fp32), 4)
    if res.runtime_overhead_gib is not None:
        accelerator["runtime_overhead_gib"] = round(res.runtime_overhead_gib, 3)
    spec: dict[str, Any] = {
        "name": name,
        "description": f"{res.cpu_model}, {res.cpu_cores} cores, {res.host_memory_gib:.0f} GiB, measured",
        "nodes": 1,
        "node": {
            "accelerator": accelerator,
            "accelerators_per_node": 1,
            "cpu": res.cpu_model,
            "cpu_cores": res.cpu_cores,
            "host_memory_gib": round(res.host_memory_gib, 2),
        },
        "network": {"type": "none", "nics_per_node": 0},
        "pue": 1.0,
        "measured": {k: v for k, v in res.as_dict().items() if k not in ("gemm_table",)},
    }
    if res.allreduce_bus_bandwidth:
        # Loopback all-reduce between processes: what a multi-process run on this machine gets.
        spec["node"]["intra_node"] = {"bandwidth_gb_s": round(res.allreduce_bus_bandwidth / 1e9, 4),
                                      "latency_us": round((res.allreduce_latency_s or 0) * 1e6 / 2, 2),
                                      "efficiency": 1.0}
    if res.disk_write and res.disk_read:
        spec["storage"] = {"read_gb_s": round(res.disk_read / 1e9, 4), "write_gb_s": round(res.disk_write / 1e9, 4),
                           "capacity_tb": round(res.disk_free_tb or 0.001, 4) or 0.001}
    return spec
