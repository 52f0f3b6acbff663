"""Search parallel layouts for a model on a cluster and turn a plan into JSON.

`search(workload, cluster)` enumerates every valid (t, p, d, micro-batch, interleave,
recompute, ZeRO) combination, estimates each with `estimator.estimate`, drops those that do not
fit in accelerator memory and ranks the rest by throughput. Tensor parallelism stays inside a
node (powers of two up to the node size) with sequence parallelism on; pipeline degrees are the
divisors of the layer count; data parallelism takes the remaining accelerators. Each estimate is
a few dozen arithmetic kernels, so even Llama-3-405B on 16,384 GPUs is searched in well under a
second.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from clusterlm.cluster.estimator import Estimate, Execution, Workload, estimate, run_totals
from clusterlm.cluster.memory import GIB, RECOMPUTE_MODES
from clusterlm.cluster.spec import Cluster
from clusterlm.errors import ConfigError
from clusterlm.model.flops import param_count

MICRO_BATCHES = (1, 2, 4, 8, 16, 32)
MAX_INTERLEAVE = 4


@dataclass(frozen=True)
class SearchResult:
    ranked: list[Estimate]  # fitting layouts, fastest first
    evaluated: int
    fitting: int
    closest: Estimate | None  # smallest-memory layout when nothing fits


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def candidate_layouts(workload: Workload, cluster: Cluster, base: Execution) -> list[Execution]:
    cfg, n = workload.model, cluster.num_gpus
    tps = [t for t in (1, 2, 4, 8, 16, 32, 64)
           if t <= cluster.gpus_per_node and n % t == 0 and cfg.n_head % t == 0 and cfg.ffn_dim % t == 0
           and (cfg.kv_heads % t == 0 or t % cfg.kv_heads == 0)]
    out = []
    for t in tps:
        for p in _divisors(cfg.n_layer):
            if n % (t * p):
                continue
            d = n // (t * p)
            if workload.global_batch % d:
                continue
            per_replica = workload.global_batch // d
            bs = [b for b in MICRO_BATCHES if per_replica % b == 0]
            vs = [1] + ([v for v in range(2, MAX_INTERLEAVE + 1) if (cfg.n_layer // p) % v == 0] if p > 1 else [])
            zeros = (0, 1, 2, 3) if d > 1 else (0,)
            for b, v, rec, zero in itertools.product(bs, vs, RECOMPUTE_MODES, zeros):
                if v > 1 and per_replica // b < p:
                    continue  # interleaving needs at least p micro-batches in flight
                out.append(replace(base, tp=t, pp=p, dp=d, micro_batch=b, interleave=v, recompute=rec, zero=zero,
                                   sequence_parallel=t > 1 and workload.seq_len % t == 0))
    return out


def search(workload: Workload, cluster: Cluster, base: Execution | None = None, top: int = 5) -> SearchResult:
    """Rank every valid layout that fits by tokens/s (ties: less memory)."""
    base = base or Execution()
    layouts = candidate_layouts(workload, cluster, base)
    if not layouts:
        raise ConfigError(
            f"no valid parallel layout for {cluster.num_gpus} accelerators: the global batch "
            f"({workload.global_batch}) must be divisible by the data-parallel degree and the layers "
            f"({workload.model.n_layer}) by the pipeline degree; try another --gpus or --batch")
    fitting: list[Estimate] = []
    closest: Estimate | None = None
    for ex in layouts:
        est = estimate(workload, cluster, ex)
        if est.fits:
            fitting.append(est)
        elif closest is None or est.memory.total < closest.memory.total:
            closest = est
    fitting.sort(key=lambda e: (-e.tokens_per_s, e.memory.total))
    return SearchResult(ranked=fitting[:top], evaluated=len(layouts), fitting=len(fitting),
                        closest=None if fitting else closest)


def parse_parallel(text: str) -> dict[str, int]:
    """`t=8,p=35,d=8` (also `tp=`, `pp=`, `dp=`, `b=`, `v=`) → degrees."""
    names = {"t": "tp", "tp": "tp", "p": "pp", "pp": "pp", "d": "dp", "dp": "dp", "b": "micro_batch",
             "v": "interleave"}
    out: dict[str, int] = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in names:
            raise ConfigError(f"--parallel: expected items like t=8,p=4,d=16, got '{part}'")
        try:
            out[names[key.strip()]] = int(value)
        except ValueError:
            raise ConfigError(f"--parallel: '{part}' needs an integer value") from None
    return out


def complete_degrees(degrees: dict[str, int], num_gpus: int) -> dict[str, int]:
    """Fill the missing one of t, p, d from the accelerator count."""
    tp, pp = degrees.get("tp", 1), degrees.get("pp", 1)
    if "dp" not in degrees:
        if num_gpus % (tp * pp):
            raise ConfigError(f"t·p = {tp * pp} does not divide the {num_gpus} accelerators")
        degrees = {**degrees, "dp": num_gpus // (tp * pp)}
    return degrees


def to_json(est: Estimate) -> dict:
    """The machine-readable plan (`clusterlm plan --json`)."""
    totals = run_totals(est)
    mem = est.memory.gib()
    e = est.execution
    return {
        "model": est.workload.model.preset or "custom",
        "params": param_count(est.workload.model),
        "cluster": est.cluster.name,
        "accelerator": est.cluster.acc.name,
        "gpus": est.num_gpus,
        "parallel": {"t": e.tp, "p": e.pp, "d": e.dp, "micro_batch": e.micro_batch, "interleave": e.interleave,
                     "micro_batches": est.micro_batches, "sequence_parallel": e.sequence_parallel,
                     "recompute": e.recompute, "zero": e.zero, "precision": e.precision, "attention": e.attention},
        "seq_len": est.workload.seq_len,
        "global_batch": est.workload.global_batch,
        "tokens_per_step": est.workload.tokens_per_step,
        "step_time_s": est.step_time_s,
        "tokens_per_s": est.tokens_per_s,
        "model_tflops_per_gpu": est.model_tflops_per_gpu,
        "hardware_tflops_per_gpu": est.hardware_tflops_per_gpu,
        "mfu": est.mfu,
        "time_s": est.time.as_dict(),
        "memory_gib": mem,
        "fits": est.fits,
        "steps": totals.steps,
        "days": totals.days,
        "gpu_hours": totals.gpu_hours,
        "energy_kwh": totals.energy_kwh,
        "cost": totals.cost,
        "currency": est.cluster.currency,
        "checkpoint_gb": totals.checkpoint_gb,
        "checkpoint_write_s": totals.checkpoint_write_s,
        "checkpoint_restore_s": totals.checkpoint_restore_s,
        "data_read_gb_s": totals.data_read_gb_s,
        "storage_read_gb_s": totals.storage_read_gb_s,
    }


def memory_headroom_gib(est: Estimate) -> float:
    return (est.memory.capacity - est.memory.total) / GIB
