"""`--cluster local`: this machine, probed on first use and cached per machine.

The first `clusterlm plan --cluster local` (or `cluster show local`) measures this machine
(`probe.py`: GEMM, attention and copy rates, element-wise kernels, kernel overhead, loopback
all-reduce between two gloo processes, disk, a process's baseline memory; ≈ 15 s) twice — with
all threads, as one `clusterlm train` process runs, and with one thread, as each worker of a
multi-process run does (torchrun starts its workers with OMP_NUM_THREADS=1) — and stores the
results in the user cache: `$CLUSTERLM_CACHE_DIR`, else `$XDG_CACHE_HOME/clusterlm`, else
`~/.cache/clusterlm`, one file per machine named by a hash of the CPU model, its flags and the
number of CPUs this process may use. Another machine (or the same home directory mounted on
another node) gets its own probe. `clusterlm cluster probe` without `--out` measures again and
replaces the cached file; `cluster probe --out FILE` writes an explicit spec as before.

`--gpus N` on `local` means N training processes on this host, each with its share of the
cores C: a rank computes at min(one-thread rate, all-thread rate / N) — one core each while
N ≤ C, a time slice of C/N cores beyond — holds 1/N of the host memory, pays kernel launch and
all-reduce latencies N/C times over once the cores are oversubscribed, and talks to the others
over the measured loopback all-reduce bandwidth (shared the same way).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from clusterlm.cluster.measured import ProbeResult, cpu_count, cpu_info, cpu_model, probe_spec
from clusterlm.errors import ConfigError
from clusterlm.fsio import atomic_write_json

LOCAL = "local"
CACHE_ENV = "CLUSTERLM_CACHE_DIR"
CACHE_VERSION = 1


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clusterlm"


def machine() -> dict[str, Any]:
    """What identifies this machine's speed: CPU model, instruction-set flags, usable CPUs."""
    info = cpu_info()
    flags = info.get("flags", "")
    return {"cpu_model": cpu_model(info), "cpu_flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:16],
            "cpus": cpu_count()}


def cache_path() -> Path:
    key = hashlib.sha256(json.dumps(machine(), sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"local-{key}.json"


def measure(quick: bool = False, disk_dir: str | Path | None = None, allreduce: bool = True) -> dict[str, dict]:
    """Probe this machine with all threads and with one (the two ways clusterlm trains on a CPU)."""
    # torch (through probe.py) is imported only when a probe runs: a cached `local` needs none.
    import torch

    from clusterlm.cluster.probe import probe

    all_threads = probe("cpu", quick=quick, disk_dir=disk_dir or cache_dir(), allreduce=allreduce)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one_thread = probe("cpu", quick=True, disk_dir=None, allreduce=False, runtime=False)
    finally:
        torch.set_num_threads(before)
    return {"all_threads": all_threads.as_dict(), "one_thread": one_thread.as_dict()}


def store(results: dict[str, dict]) -> Path:
    """Write probe results as this machine's cached `local` description."""
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"version": CACHE_VERSION, "machine": machine(),
                             "probed": datetime.datetime.now().isoformat(timespec="seconds"), **results})
    return path


def cached(measure_fn: Callable[[], dict[str, dict]] | None = None, refresh: bool = False) -> dict[str, Any]:
    """This machine's probe results, measured on first use (or `refresh`) and cached."""
    path = cache_path()
    if path.is_file() and not refresh:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") == CACHE_VERSION and data.get("machine") == machine():
                return data
        except (OSError, json.JSONDecodeError):
            pass  # a torn or foreign file: probe again
    sys.stderr.write(f"clusterlm: measuring this machine for --cluster local (once; cached in {path})\n")
    store((measure_fn or measure)())
    return json.loads(path.read_text(encoding="utf-8"))


def _result(data: dict) -> ProbeResult:
    return ProbeResult(**{**data, "gemm_table": [tuple(x) for x in data.get("gemm_table", [])]})


def rank_result(data: dict[str, Any], ranks: int) -> ProbeResult:
    """What one of `ranks` processes on this machine gets (module docstring)."""
    whole, one = _result(data["all_threads"]), _result(data["one_thread"])
    if ranks == 1:
        return whole
    cores = max(1, whole.cpu_cores)
    slow = max(1.0, ranks / cores)  # time slices once the cores are oversubscribed

    def share(all_rate: float | None, one_rate: float | None) -> float | None:
        if all_rate is None or one_rate is None:
            return all_rate or one_rate
        return min(one_rate, all_rate / ranks)

    flops = {k: share(v, one.matmul_flops.get(k, v)) for k, v in whole.matmul_flops.items()}
    bus = whole.allreduce_bus_bandwidth / slow if whole.allreduce_bus_bandwidth else None
    return replace(whole, threads=1, matmul_flops=flops, gemm_table=one.gemm_table or whole.gemm_table,
                   attention_flops=share(whole.attention_flops, one.attention_flops),
                   memory_bandwidth=share(whole.memory_bandwidth, one.memory_bandwidth),
                   elementwise_efficiency=one.elementwise_efficiency, kernel_overhead_s=one.kernel_overhead_s * slow,
                   allreduce_bus_bandwidth=bus,
                   allreduce_latency_s=whole.allreduce_latency_s * slow if whole.allreduce_latency_s else None)


def local_spec(ranks: int = 1, measure_fn: Callable[[], dict[str, dict]] | None = None) -> dict[str, Any]:
    """A cluster spec (plain dict) for `ranks` training processes on this machine."""
    if ranks < 1:
        raise ConfigError(f"--gpus must be ≥ 1, got {ranks}")
    data = cached(measure_fn)
    res = rank_result(data, ranks)
    cores = max(1, res.cpu_cores)
    per_rank = f"{min(1.0, cores / ranks):.2g} core" if ranks > 1 else f"{cores} threads"
    spec = probe_spec(res, name=f"this machine ({ranks} CPU rank{'s' if ranks > 1 else ''})")
    acc = spec["node"]["accelerator"]
    acc["display"] = f"{res.device_name} ({per_rank} per rank)"
    acc["memory_gib"] = round(res.host_memory_gib / ranks, 3)
    acc["source"] = f"clusterlm cluster probe (cached {data.get('probed', '?')})"
    spec["node"]["accelerators_per_node"] = ranks
    if ranks > 1 and "intra_node" not in spec["node"]:
        raise ConfigError("the cached probe of this machine has no loopback all-reduce measurement; "
                          "run `clusterlm cluster probe` to measure again")
    spec["measured"]["ranks"] = ranks
    return spec
