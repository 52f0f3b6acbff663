"""Whole-run figures from one step's estimate: steps, days, GPU-hours, energy, cost, checkpoint I/O.

Run length is `--tokens` or `--steps`. A batch ramp-up (Megatron-LM's `--rampup-batch-size
START INCREMENT SAMPLES`, as GPT-3, MT-NLG and BLOOM-176B used) trains its first SAMPLES
sequences at batches START, START + INCREMENT, …, each for an equal share of SAMPLES; those
steps are smaller and, per token, slower (fewer micro-batches fill the pipeline). `--tokens`
counts the ramp's tokens; the totals re-estimate each ramp batch and add its steps and time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from clusterlm.cluster.estimator import Estimate, estimate
from clusterlm.cluster.memory import StateBytes
from clusterlm.errors import ConfigError
from clusterlm.model.flops import param_count


@dataclass(frozen=True)
class RunTotals:
    """Whole-run figures derived from one step's estimate and the cluster's power, price, storage."""

    steps: float | None
    days: float | None
    gpu_hours: float | None
    energy_kwh: float | None
    cost: float | None
    checkpoint_gb: float  # weights + optimizer state (gradients are not saved), 1e9 bytes
    checkpoint_write_s: float
    checkpoint_restore_s: float
    data_read_gb_s: float  # token bandwidth training consumes
    storage_read_gb_s: float  # what the storage system delivers
    rampup_steps: float = 0.0  # steps spent in the batch ramp-up (included in `steps`)


def rampup_phases(start: int, increment: int, samples: int, batch: int) -> list[tuple[int, float]]:
    """(batch, sequences trained at that batch) for each ramp-up phase (Megatron's schedule)."""
    if start < 1 or increment < 1 or samples < 0:
        raise ConfigError(f"--batch-rampup START,INCREMENT,SAMPLES must be positive, got {start},{increment},{samples}")
    if start >= batch:
        return []
    if (batch - start) % increment:
        raise ConfigError(f"--batch-rampup: the batch ({batch}) minus the start ({start}) must be a multiple of "
                          f"the increment ({increment})")
    phases = (batch - start) // increment
    per_phase = samples / phases
    return [(start + k * increment, per_phase) for k in range(phases)]


def _run_steps_and_seconds(est: Estimate) -> tuple[float | None, float | None, float]:
    wl = est.workload
    if wl.steps is not None:
        return float(wl.steps), wl.steps * est.step_time_s, 0.0
    if wl.total_tokens is None:
        return None, None, 0.0
    samples_left = wl.total_tokens / wl.seq_len
    steps = seconds = ramp_steps = 0.0
    if wl.batch_rampup is not None:
        for batch, samples in rampup_phases(*wl.batch_rampup, wl.global_batch):
            samples = min(samples, samples_left)
            if samples <= 0:
                break
            small = estimate(replace(wl, global_batch=batch, batch_rampup=None), est.cluster, est.execution)
            n = samples / small.global_batch
            steps, seconds, ramp_steps = steps + n, seconds + n * small.step_time_s, ramp_steps + n
            samples_left -= samples
    n = samples_left / est.global_batch
    return steps + n, seconds + n * est.step_time_s, ramp_steps


def run_totals(est: Estimate) -> RunTotals:
    cl, wl = est.cluster, est.workload
    steps, seconds, ramp_steps = _run_steps_and_seconds(est)
    n = est.num_gpus
    nodes_used = max(1, math.ceil(n / cl.gpus_per_node))
    state = StateBytes.of(est.execution.precision, est.execution.grad_dtype)
    ckpt_bytes = param_count(wl.model) * (state.weights + state.optimizer)
    # Every node writes its shard in parallel, limited by its NICs and by the file system.
    nic_node = cl.nics_per_node * cl.net.port_gbit_s / 8 * 1e9 * cl.net.efficiency if cl.nodes > 1 else math.inf
    write_bw = min(cl.storage.write_gb_s * 1e9, nodes_used * nic_node)
    read_bw = min(cl.storage.read_gb_s * 1e9, nodes_used * nic_node)
    token_bytes = 2 if wl.model.require_vocab() <= 65535 else 4
    return RunTotals(
        steps=steps,
        days=seconds / 86400 if seconds is not None else None,
        gpu_hours=n * seconds / 3600 if seconds is not None else None,
        energy_kwh=(nodes_used * cl.node_power_w * (n / (nodes_used * cl.gpus_per_node)) * seconds / 3.6e6 * cl.pue
                    if seconds is not None else None),
        cost=(n * seconds / 3600 * cl.price_per_gpu_hour
              if seconds is not None and cl.price_per_gpu_hour is not None else None),
        checkpoint_gb=ckpt_bytes / 1e9,
        checkpoint_write_s=ckpt_bytes / write_bw,
        checkpoint_restore_s=ckpt_bytes / read_bw,
        data_read_gb_s=est.tokens_per_s * token_bytes / 1e9,
        storage_read_gb_s=cl.storage.read_gb_s,
        rampup_steps=ramp_steps,
    )
