"""Measure this machine: matmul FLOP/s, memory bandwidth, disk, loopback all-reduce, runtime overhead.

`measure_matmul_flops` (runtime/measure.py) is shared with training, which measures MFU peaks on
devices the catalog does not know.
`probe(...)` runs every measurement; `measured.probe_spec(...)` turns the results into a cluster
spec that `clusterlm plan --cluster` accepts. Every measurement is short and bounded: multi-process
all-reduce runs two gloo processes on 127.0.0.1 with a free port and hard timeouts.
"""

from __future__ import annotations

import datetime
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from clusterlm.cluster.measured import ProbeResult, cpu_count, cpu_model, probe_spec  # noqa: F401  (probe_spec re-exported)
from clusterlm.errors import DistributedError
from clusterlm.runtime.measure import measure_matmul_flops
from clusterlm.runtime.measure import synchronize as _sync
from clusterlm.runtime.precision import DTYPES


def _time(fn, min_seconds: float, device: torch.device, min_reps: int = 3, sample_s: float = 0.02,
          best: bool = False) -> float:
    """Median seconds per call: samples of ≥ `sample_s` each (k back-to-back calls), ≥ min_reps of them.

    The median, not the best: on a shared machine the planner should predict what a run sees
    under the load of the moment (on an idle one the two agree). Samples span several scheduler
    time slices so that a tiny kernel is not timed as one lucky or unlucky slice.
    """

    fn()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    k = max(1, int(sample_s / max(time.perf_counter() - t0, 1e-7)))
    samples: list[float] = []
    deadline = time.perf_counter() + min_seconds
    while len(samples) < min_reps or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        _sync(device)
        samples.append((time.perf_counter() - t0) / k)
    return min(samples) if best else statistics.median(samples)


def measure_gemm_table(dtype: torch.dtype = torch.float32, device: str = "cpu",
                       sizes: tuple[int, ...] = (64, 128, 256, 512, 1024), min_seconds: float = 0.15,
                       ) -> list[tuple[float, float]]:
    """(GFLOP, achieved FLOP/s) of square GEMMs of each size: the size-dependent efficiency curve.

    Best samples: the curve's shape is a property of the hardware, while the load of the moment
    is carried by the (median) large-GEMM rate it is scaled to in `probe_spec`.
    """
    dev = torch.device(device)
    out = []
    for n in sizes:
        a = torch.randn(n, n, dtype=dtype, device=dev)
        b = torch.randn(n, n, dtype=dtype, device=dev)
        t = _time(lambda a=a, b=b: torch.matmul(a, b), min_seconds, dev, sample_s=0.0, best=True)
        out.append((2.0 * n**3 / 1e9, 2.0 * n**3 / t))
    return out


def measure_memory_bandwidth(nbytes: int = 1 << 27, device: str = "cpu", min_seconds: float = 0.3) -> float:
    """Bytes/s of a large tensor copy (read + write counted), best of repeats."""
    dev = torch.device(device)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    t = _time(lambda: dst.copy_(src), min_seconds, dev)
    return 2.0 * src.numel() * 4 / t


def measure_kernel_overhead(device: str = "cpu", min_seconds: float = 0.1) -> float:
    """Seconds per tiny eager op (dispatch + launch): the fixed cost every kernel pays.

    The best sample of an 8-element add. A bigger tensor would also wake the CPU thread pool,
    and on a busy machine that wait is a whole scheduler slice — a property of the load, which
    the median throughput measurements already carry, not of the kernel.
    """
    dev = torch.device(device)
    a = torch.ones(8, device=dev)
    out = torch.empty_like(a)
    return _time(lambda: torch.add(a, 1.0, out=out), min_seconds, dev, sample_s=0.005, best=True)


def measure_elementwise_efficiency(device: str = "cpu", rows: int = 4096, cols: int = 1024,
                                   min_seconds: float = 0.2, copy_bandwidth: float | None = None) -> float:
    """How fast a training step's element-wise kernels run relative to a plain copy.

    LayerNorm, GELU and a residual add, forward and backward, on a (rows, cols) fp32 tensor. The
    planner counts each such kernel as its bytes read + written at the memory bandwidth; on a
    GPU those fused kernels are bandwidth-bound, on a CPU the reductions and transcendentals are
    slower than a copy. The ratio (model bytes ÷ copy bandwidth ÷ measured time) is the memory
    efficiency `probe_spec` writes, so the same kernel model holds on both.
    """

    dev = torch.device(device)
    x = torch.randn(rows, cols, device=dev, requires_grad=True)
    r = torch.randn(rows, cols, device=dev)
    w, b = torch.ones(cols, device=dev, requires_grad=True), torch.zeros(cols, device=dev, requires_grad=True)

    def step():
        y = F.gelu(F.layer_norm(x, (cols,), w, b), approximate="tanh") + r
        y.backward(torch.ones_like(y))

    t = _time(step, min_seconds, dev)
    e, n = 4, rows * cols
    # The estimator's byte counts: norm 2e fwd / 3e bwd, GELU 2e / 3e, add 3e / 3e; plus the
    # gradient seed (a fill) and the .grad write-back the autograd engine adds.
    model_bytes = e * n * (2 + 3 + 2 + 3 + 3 + 3) + 2 * e * n
    copy_bw = copy_bandwidth or measure_memory_bandwidth(e * n, device, min_seconds=min_seconds)
    return min(1.0, model_bytes / copy_bw / t)


def measure_attention_flops(device: str = "cpu", dtype: torch.dtype = torch.float32, batch: int = 4, heads: int = 8,
                            seq: int = 256, head_dim: int = 64, min_seconds: float = 0.2) -> float:
    """Executed FLOP/s of causal scaled-dot-product attention (the fused kernel training uses)."""

    dev = torch.device(device)
    q, k, v = (torch.randn(batch, heads, seq, head_dim, dtype=dtype, device=dev) for _ in range(3))
    t = _time(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), min_seconds, dev)
    executed = 4.0 * batch * heads * seq * seq * head_dim / 2  # QKᵀ and AV, causal half
    return executed / t


def measure_disk(directory: str | Path, nbytes: int = 1 << 27) -> tuple[float, float]:
    """(write, read) bytes/s of a file in `directory`; fsync'd write, page cache dropped before reading."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = os.urandom(1 << 20) * (nbytes >> 20)
    fd, path = tempfile.mkstemp(prefix=".clusterlm-probe-", dir=directory)
    try:
        t0 = time.perf_counter()
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        write = len(data) / (time.perf_counter() - t0)
        with open(path, "rb") as fh:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            t0 = time.perf_counter()
            while fh.read(1 << 24):
                pass
            read = len(data) / (time.perf_counter() - t0)
    finally:
        os.unlink(path)
    return write, read


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _allreduce_worker(rank: int, world: int, port: int, sizes: list[int], reps: int, queue) -> None:

    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=30))
        results = {}
        for nbytes in sizes:
            t = torch.ones(max(1, nbytes // 4), dtype=torch.float32)
            dist.all_reduce(t)  # warm-up
            dist.barrier()
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                dist.all_reduce(t)
                times.append(time.perf_counter() - t0)
            # The median, as for every other timing here: a collective waits for its slowest rank,
            # and on a shared machine that wait is part of what a run sees.
            results[nbytes] = sorted(times)[len(times) // 2]
        dist.destroy_process_group()
        if rank == 0:
            queue.put(results)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def measure_allreduce(world: int = 2, sizes: tuple[int, ...] = (8, 1 << 22), reps: int = 5,
                      timeout_s: float = 60.0) -> dict[int, float]:
    """Median seconds per all-reduce of each byte size over `world` gloo processes on 127.0.0.1."""

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_allreduce_worker, args=(r, world, port, list(sizes), reps, queue), daemon=True)
             for r in range(world)]
    for p in procs:
        p.start()
    try:
        result = queue.get(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - queue.Empty on timeout
        result = {"error": f"no result within {timeout_s:.0f} s"}
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    if "error" in result:
        raise DistributedError(f"loopback all-reduce probe failed: {result['error']}")
    return result


def measure_runtime_overhead_gib(timeout_s: float = 120.0) -> float:
    """Peak resident memory of a fresh training-stack process after a tiny training step.

    Read from /proc/self/status (VmHWM): `ru_maxrss` would report the parent's peak, which a
    child inherits across fork + exec on Linux.
    """
    code = (
        "import resource, torch\n"
        "try:\n    import clusterlm.train.trainer\nexcept Exception:\n    pass\n"
        "w = torch.randn(64, 64, requires_grad=True)\n"
        "opt = torch.optim.AdamW([w])\n(w @ w).sum().backward(); opt.step()\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
        "print(int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s, check=True)
    return int(out.stdout.strip().splitlines()[-1]) * 1024 / 2**30


def probe(device: str = "cpu", *, quick: bool = False, disk_dir: str | Path | None = ".",
          allreduce: bool = True, runtime: bool = True) -> ProbeResult:
    """Run the measurements (≈ 5–15 s; `quick` shortens every timing)."""

    t_start = time.perf_counter()
    dev = torch.device(device)
    secs = 0.05 if quick else 0.3
    cpu = cpu_model()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu
    res = ProbeResult(device=str(dev), device_name=name, threads=torch.get_num_threads(), cpu_model=cpu,
                      cpu_cores=cpu_count(), host_memory_gib=psutil.virtual_memory().total / 2**30,
                      load_average=os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
    n = 512 if quick else 1024
    for key in ("fp32", "bf16"):
        size = n if key == "fp32" else min(n, 512)
        a = torch.randn(size, size, dtype=DTYPES[key], device=dev)
        res.matmul_flops[key] = 2.0 * size**3 / _time(lambda a=a: torch.matmul(a, a), secs, dev)
    sizes = (64, 128, 256, 512) if quick else (64, 128, 256, 512, 1024)
    res.gemm_table = measure_gemm_table(torch.float32, device, sizes=sizes, min_seconds=secs / 2)
    res.attention_flops = measure_attention_flops(device, min_seconds=secs / 2, seq=128 if quick else 256)
    res.memory_bandwidth = measure_memory_bandwidth(1 << (25 if quick else 27), device, min_seconds=secs)
    res.elementwise_efficiency = measure_elementwise_efficiency(device, rows=1024 if quick else 4096,
                                                                min_seconds=secs, copy_bandwidth=res.memory_bandwidth)
    res.kernel_overhead_s = measure_kernel_overhead(device, min_seconds=secs / 2)
    if disk_dir is not None:
        res.disk_write, res.disk_read = measure_disk(disk_dir, 1 << (24 if quick else 27))
        res.disk_dir = str(Path(disk_dir).resolve())
        res.disk_free_tb = psutil.disk_usage(str(disk_dir)).free / 1e12
    if allreduce:
        times = measure_allreduce(2, sizes=(8, 1 << (20 if quick else 22)), reps=3 if quick else 5)
        small, large = sorted(times)
        res.allreduce_latency_s = times[small]
        # Ring bus bandwidth: 2(n−1)/n · bytes / time, n = 2.
        res.allreduce_bus_bandwidth = large / max(times[large] - times[small], 1e-9)
    if runtime and dev.type == "cpu":
        res.runtime_overhead_gib = measure_runtime_overhead_gib()
    res.seconds = time.perf_counter() - t_start
    return res
