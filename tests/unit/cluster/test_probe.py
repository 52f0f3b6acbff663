"""The probe's measurements are bounded and its spec is accepted by the planner."""

from __future__ import annotations

import pytest
import torch

from clusterlm.cluster import probe
from clusterlm.cluster.estimator import Execution, Workload, estimate
from clusterlm.cluster.spec import ClusterSpec, resolve
from clusterlm.config.base import validate

from planhelp import gpt


def test_small_measurements_are_positive(tmp_path):
    assert probe.measure_matmul_flops(torch.float32, "cpu", n=64, min_seconds=0.01) > 0
    table = probe.measure_gemm_table(sizes=(32, 64), min_seconds=0.01)
    assert [round(g, 9) for g, _ in table] == [2 * 32**3 / 1e9, 2 * 64**3 / 1e9] and all(f > 0 for _, f in table)
    assert probe.measure_memory_bandwidth(1 << 20, min_seconds=0.01) > 1e6
    assert 0 < probe.measure_kernel_overhead(min_seconds=0.02) < 0.05
    assert probe.measure_attention_flops(batch=1, heads=2, seq=32, head_dim=16, min_seconds=0.01) > 0
    write, read = probe.measure_disk(tmp_path, nbytes=1 << 20)
    assert write > 0 and read > 0 and not list(tmp_path.iterdir())  # the test file is removed


def test_loopback_all_reduce_two_gloo_processes():
    times = probe.measure_allreduce(world=2, sizes=(8, 1 << 16), reps=2, timeout_s=60)
    assert set(times) == {8, 1 << 16} and all(t > 0 for t in times.values())


def fake_result() -> probe.ProbeResult:
    return probe.ProbeResult(
        device="cpu", device_name="Test CPU", threads=2, matmul_flops={"fp32": 80e9, "bf16": 2e9},
        gemm_table=[(0.0005, 20e9), (0.27, 78e9), (2.1, 80e9)], attention_flops=30e9, memory_bandwidth=20e9,
        kernel_overhead_s=5e-6, disk_write=1e9, disk_read=2e9, disk_dir="/tmp", allreduce_latency_s=1e-4,
        allreduce_bus_bandwidth=2e9, runtime_overhead_gib=0.5, host_memory_gib=16.0, cpu_model="Test CPU",
        cpu_cores=2, disk_free_tb=0.1)


def test_probe_spec_is_a_valid_plannable_cluster():
    spec = probe.probe_spec(fake_result())
    cluster = resolve(validate(ClusterSpec, spec))
    assert cluster.acc.peak_flops("fp32") == pytest.approx(80e9)
    assert cluster.acc.gemm_table[0] == (0.0005, 0.25)  # relative to the table's largest GEMM
    assert cluster.acc.runtime_overhead_gib == 0.5 and cluster.storage.write_gb_s == 1.0
    est = estimate(Workload(gpt(), seq_len=128, global_batch=4), cluster,
                   Execution(micro_batch=4, precision="fp32"))
    assert est.fits and est.step_time_s > 0
    # Bigger GEMMs are more efficient on this "CPU": the smallest model runs at lower MFU.
    small = estimate(Workload(gpt(d_model=64, n_head=4), seq_len=128, global_batch=4), cluster,
                     Execution(micro_batch=4, precision="fp32"))
    assert small.mfu < est.mfu
