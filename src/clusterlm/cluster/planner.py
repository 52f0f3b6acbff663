"""Search parallel layouts for a model on a cluster and turn a plan into JSON.

`search(workload, cluster)` enumerates every valid (t, p, d, micro-batch, interleave,
recompute, ZeRO) combination, estimates each with `estimator.estimate`, drops those that do not
fit in accelerator memory and ranks the rest by throughput. Only layouts clusterlm's trainer
runs are ranked (`executable.py`); the fastest others that fit are returned apart, each with
the reason the trainer cannot run it (ZeRO-1, selective recompute, a layout its validator
refuses, …), so a plan never recommends what `clusterlm train` would refuse. Tensor parallelism stays inside a
node (powers of two up to the node size) with sequence parallelism on; pipeline degrees are the
divisors of the layer count (even splits) and of the layer count + 2 (balanced splits: embedding
and loss as one layer each); data parallelism takes the remaining accelerators. Each estimate is
a few dozen arithmetic kernels, so even Llama-3-405B on 16,384 GPUs is searched in well under a
second.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from clusterlm.cluster.estimator import Estimate, Execution, Workload, estimate
from clusterlm.cluster.executable import not_executable
from clusterlm.cluster.memory import GIB, RECOMPUTE_MODES
from clusterlm.cluster.spec import Cluster
from clusterlm.cluster.totals import run_totals
from clusterlm.errors import ConfigError
from clusterlm.model.flops import param_count

MICRO_BATCHES = (1, 2, 4, 8, 16, 32)
MAX_INTERLEAVE = 4


@dataclass(frozen=True)
class SearchResult:
    ranked: list[Estimate]  # fitting layouts the trainer runs, fastest first
    evaluated: int
    fitting: int  # of which fit in memory and are executable by clusterlm
    closest: Estimate | None  # smallest-memory executable layout when no executable one fits
    # Fitting layouts clusterlm's trainer cannot run, fastest first, with the reason.
    not_executable: list[tuple[Estimate, str]] = field(default_factory=list)
    not_executable_fitting: int = 0


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def candidate_layouts(workload: Workload, cluster: Cluster, base: Execution) -> list[Execution]:
    cfg, n = workload.model, cluster.num_gpus
    tps = [t for t in (1, 2, 4, 8, 16, 32, 64)
           if t <= cluster.gpus_per_node and n % t == 0 and cfg.n_head % t == 0 and cfg.ffn_dim % t == 0
           and (cfg.kv_heads % t == 0 or t % cfg.kv_heads == 0)]
    out = []
    # Pipeline degrees: even splits, and balanced ones (embedding and loss as a layer each, e.g.
    # 126 layers over 16 stages as 7, 8, …, 8, 7).
    pps = sorted(set(_divisors(cfg.n_layer)) | {p for p in _divisors(cfg.n_layer + 2) if 1 < p <= cfg.n_layer // 2})
    for t in tps:
        for p in pps:
            if n % (t * p):
                continue
            d = n // (t * p)
            if workload.global_batch % d:
                continue
            per_replica = workload.global_batch // d
            bs = [b for b in MICRO_BATCHES if per_replica % b == 0]
            vs = [1] + ([v for v in range(2, MAX_INTERLEAVE + 1) if cfg.n_layer % (p * v) == 0] if p > 1 else [])
            zeros = (0, 1, 2, 3) if d > 1 else (0,)
            for b, v, rec, zero in itertools.product(bs, vs, RECOMPUTE_MODES, zeros):
                if v > 1 and per_replica // b < p:
                    continue  # interleaving needs at least p micro-batches in flight
                out.append(replace(base, tp=t, pp=p, dp=d, micro_batch=b, interleave=v, recompute=rec, zero=zero,
                                   sequence_parallel=t > 1 and workload.seq_len % t == 0))
    return out


def search(workload: Workload, cluster: Cluster, base: Execution | None = None, top: int = 5) -> SearchResult:
    """Rank every valid layout that fits and that clusterlm runs by tokens/s (ties: less memory)."""
    base = base or Execution()
    layouts = candidate_layouts(workload, cluster, base)
    if not layouts:
        raise ConfigError(
            f"no valid parallel layout for {cluster.num_gpus} accelerators: the global batch "
            f"({workload.global_batch}) must be divisible by the data-parallel degree and the layers "
            f"({workload.model.n_layer}) by the pipeline degree; try another --gpus or --batch")
    fitting: list[Estimate] = []
    others: list[tuple[Estimate, str]] = []
    closest: Estimate | None = None
    for ex in layouts:
        reason = not_executable(workload, ex)
        est = estimate(workload, cluster, ex)
        if est.fits and reason is None:
            fitting.append(est)
        elif est.fits:
            others.append((est, reason))
        elif reason is None and (closest is None or est.memory.total < closest.memory.total):
            closest = est
    def speed(e: Estimate) -> tuple[float, float]:
        return -e.tokens_per_s, e.memory.total

    fitting.sort(key=speed)
    others.sort(key=lambda pair: speed(pair[0]))
    return SearchResult(ranked=fitting[:top], evaluated=len(layouts), fitting=len(fitting),
                        closest=None if fitting else closest, not_executable=others[:top],
                        not_executable_fitting=len(others))


def to_json(est: Estimate, bands: dict[str, float] | None = None) -> dict:
    """The machine-readable plan (`clusterlm plan --json`).

    `bands` holds the relative uncertainties {"time": σ, "memory": σ} (±1σ of the held-out
    validation errors, validation.py): every time, throughput and memory figure gets a range.
    """
    totals = run_totals(est)
    mem = est.memory.gib()
    e = est.execution
    out = {
        "model": est.workload.model.preset or "custom",
        "params": param_count(est.workload.model),
        "cluster": est.cluster.name,
        "accelerator": est.cluster.acc.name,
        "gpus": est.num_gpus,
        "parallel": {"t": e.tp, "p": e.pp, "d": e.dp, "c": e.cp, "dp_shard": e.dp_shard or e.dp,
                     "micro_batch": e.micro_batch, "interleave": e.interleave, "micro_batches": est.micro_batches,
                     "stage_layers": list(est.split.chunks), "pipeline_split": est.split.rule,
                     "sequence_parallel": e.sequence_parallel, "recompute": e.recompute,
                     "recompute_fraction": e.recompute_fraction, "zero": e.zero, "precision": e.precision,
                     "fp8": e.fp8, "attention": e.attention, "elementwise": e.elementwise, "tp_overlap": e.tp_overlap,
                     "dp_overlap": e.dp_overlap, "grad_accum_fusion": e.grad_accum_fusion},
        "seq_len": est.workload.seq_len,
        "global_batch": est.workload.global_batch,
        "effective_global_batch": est.global_batch,
        "tokens_per_step": est.tokens_per_step,
        "step_time_s": est.step_time_s,
        "tokens_per_s": est.tokens_per_s,
        "model_tflops_per_gpu": est.model_tflops_per_gpu,
        "hardware_tflops_per_gpu": est.hardware_tflops_per_gpu,
        "mfu": est.mfu,
        "time_s": est.time.as_dict(),
        "memory_gib": mem,
        "layer_state_gib": est.layer_weights_gib,
        "layer_activations_gib": est.layer_activations_gib,
        "fits": est.fits,
        "steps": totals.steps,
        "rampup_steps": totals.rampup_steps,
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
    if bands is not None:
        out["range"] = ranges(out, bands["time"], bands["memory"])
    return out


def span(x: float | None, band: float, inverse: bool = False) -> list[float] | None:
    """[low, high] of `x` for a relative uncertainty `band` of time (inverse: of a rate)."""
    if x is None:
        return None
    lo, hi = 1 - band, 1 + band
    return [x / hi, x / lo] if inverse else [x * lo, x * hi]


def ranges(plan: dict, time_band: float, memory_band: float) -> dict:
    """±1σ ranges of the headline figures: time-like ones scale with the step time, rates inversely."""
    return {"sigma_time": time_band, "sigma_memory": memory_band,
            "step_time_s": span(plan["step_time_s"], time_band), "days": span(plan["days"], time_band),
            "gpu_hours": span(plan["gpu_hours"], time_band), "cost": span(plan["cost"], time_band),
            "energy_kwh": span(plan["energy_kwh"], time_band),
            "tokens_per_s": span(plan["tokens_per_s"], time_band, inverse=True),
            "mfu": span(plan["mfu"], time_band, inverse=True),
            "memory_total_gib": span(plan["memory_gib"]["total"], memory_band)}


def memory_headroom_gib(est: Estimate) -> float:
    return (est.memory.capacity - est.memory.total) / GIB
