"""Each formula of the performance model against a hand-computed case."""

from __future__ import annotations

import math

import pytest

from clusterlm.cluster import comms
from clusterlm.cluster.compute import Device, gemm_efficiency, gemm_time, mem_time
from clusterlm.cluster.estimator import Execution, Workload, comm_bytes_per_step, estimate, run_totals
from clusterlm.cluster.memory import (
    ActivationShape,
    StateBytes,
    in_flight_factor,
    layer_activation_bytes,
    stage_params,
)
from clusterlm.config.model import ModelConfig
from clusterlm.model.flops import flops_per_token, param_count, recompute_flops_per_token

from planhelp import gpt, toy_cluster


# ----------------------------------------------------------------------------- collectives
def test_ring_collectives_alpha_beta():
    f = comms.Fabric(bytes_per_s=100.0, latency_s=0.0)
    assert comms.ring_time(comms.ALL_REDUCE, 800, 8, f) == pytest.approx(14.0)  # 2·7/8·800/100
    assert comms.ring_time(comms.ALL_GATHER, 800, 8, f) == pytest.approx(7.0)
    assert comms.ring_time(comms.REDUCE_SCATTER, 800, 8, f) == pytest.approx(7.0)
    slow = comms.Fabric(bytes_per_s=100.0, latency_s=1.0)
    assert comms.ring_time(comms.ALL_REDUCE, 800, 8, slow) == pytest.approx(14.0 + 14 * 1.0)
    assert comms.ring_time(comms.ALL_REDUCE, 800, 1, f) == 0.0


def test_hierarchical_all_reduce_across_two_nodes():
    cluster = toy_cluster(nodes=2, gpus_per_node=4)  # NVLink-like 100 GB/s, NIC 10 GB/s per GPU
    group = comms.group_layout(8, 1, 4)
    assert (group.size, group.per_node, group.nodes) == (8, 4, 2)
    # reduce-scatter in node (3/4·8e9/100e9) + all-reduce of 1/4 over 2 nodes (2·1/2·2e9/10e9) + all-gather
    expected = 0.06 + 0.2 + 0.06
    assert comms.collective_time(comms.ALL_REDUCE, 8e9, group, cluster) == pytest.approx(expected)


def test_group_layout_follows_megatron_rank_order():
    # t=8 fills a DGX node: the data-parallel group has one member per node.
    assert comms.group_layout(16, 8, 8) == comms.Group(16, 1)
    # t=2 on 8-GPU nodes: 4 data-parallel peers share each node.
    assert comms.group_layout(16, 2, 8) == comms.Group(16, 4)


def test_overlap_hides_communication_but_not_for_free():
    g = comms.Group(8, 8)  # inside one node
    assert comms.overlapped(1.0, 10.0, g) == pytest.approx(comms.INTERFERENCE_INTRA * 1.0)
    assert comms.overlapped(3.0, 1.0, g) == pytest.approx(2.0 + comms.INTERFERENCE_INTRA * 1.0)


# ----------------------------------------------------------------------------- kernels
DEV = Device(peak_flops=100e12, mem_bytes_per_s=1e12, gemm_efficiency=1.0, kernel_s=0.0)


def test_gemm_compute_bound():
    # 1000³: 2e9 FLOPs at 100 TFLOP/s = 20 µs; traffic 6 MB at 1 TB/s = 6 µs
    assert gemm_time(DEV, 1000, 1000, 1000, 2) == pytest.approx(2e-5)


def test_gemm_memory_bound():
    # a GEMV: 2e6 FLOPs (20 ns) but 2·(1000 + 1e6 + 1000) bytes (2.004 µs)
    assert gemm_time(DEV, 1, 1000, 1000, 2) == pytest.approx(2.004e-6)


def test_kernel_overhead_and_memory_kernels():
    dev = Device(peak_flops=100e12, mem_bytes_per_s=1e12, gemm_efficiency=0.5, kernel_s=5e-6)
    assert mem_time(dev, 1e9) == pytest.approx(1e-3 + 5e-6)
    assert gemm_time(dev, 1000, 1000, 1000, 2) == pytest.approx(4e-5 + 5e-6)


def test_measured_gemm_table_interpolates_in_log_size():
    dev = Device(peak_flops=1e12, mem_bytes_per_s=1e12, gemm_efficiency=1.0, kernel_s=0.0,
                 gemm_table=((1.0, 0.5), (100.0, 1.0)))
    assert gemm_efficiency(dev, 10e9) == pytest.approx(0.75)
    assert gemm_efficiency(dev, 0.01e9) == 0.5 and gemm_efficiency(dev, 1e12) == 1.0


# ----------------------------------------------------------------------------- memory
S, B, H, A = 2048, 1, 12288, 96


def _shape(t=8, sp=False, **kw):
    base = dict(b=B, s=S, h=H, heads=A, kv_heads=A, head_dim=H // A, ff=4 * H, gated=False, dropout=True, t=t,
                sp=sp, flash=False, elem_bytes=2)
    return ActivationShape(**{**base, **kw})


def test_activations_match_korthikanti_formulas():
    sbh = S * B * H
    t = 8
    assert layer_activation_bytes(_shape(t=1), "none") == pytest.approx(sbh * (34 + 5 * A * S / H))
    assert layer_activation_bytes(_shape(), "none") == pytest.approx(sbh * (10 + 24 / t + 5 * A * S / (H * t)))
    assert layer_activation_bytes(_shape(sp=True), "none") == pytest.approx(sbh * (34 + 5 * A * S / H) / t)
    assert layer_activation_bytes(_shape(sp=True), "selective") == pytest.approx(34 * sbh / t)
    assert layer_activation_bytes(_shape(), "full") == pytest.approx(2 * sbh)


def test_activation_generalisations():
    sbh = S * B * H
    # No dropout: the two 1-byte masks per layer and the attention-dropout tensors disappear.
    assert layer_activation_bytes(_shape(t=1, dropout=False), "none") == pytest.approx(
        sbh * 32 + 2 * A * S * S * B)
    # FlashAttention keeps no s×s tensors: its output (2sbh) and fp32 log-sum-exp rows instead.
    assert layer_activation_bytes(_shape(t=1, flash=True), "none") == pytest.approx(sbh * 36 + 4 * B * A * S)
    # fp32 doubles every element (masks stay 1 byte).
    fp32 = layer_activation_bytes(_shape(t=1, elem_bytes=4, dropout=False), "none")
    assert fp32 == pytest.approx(2 * layer_activation_bytes(_shape(t=1, dropout=False), "none"))


def test_in_flight_micro_batches():
    assert in_flight_factor(1, 64, 1) == 1.0
    assert in_flight_factor(8, 64, 1) == 8.0
    assert in_flight_factor(8, 4, 1) == 4.0  # never more than the micro-batches that exist
    assert in_flight_factor(8, 64, 3) == pytest.approx(8 * (1 + 7 / 24))


def test_state_bytes_per_parameter():
    assert StateBytes.of("bf16") == StateBytes(2, 2, 12)  # ZeRO paper: 16 bytes
    assert StateBytes.of("fp16", "fp32") == StateBytes(2, 4, 12)  # Megatron fp32 main grads: 18
    assert StateBytes.of("fp32") == StateBytes(4, 4, 8)


def test_stage_params_split_by_tp_and_pp():
    cfg = gpt(n_layer=4, n_head=4, d_model=64, vocab=1000, seq=32)  # tied embeddings
    h = 64
    per_layer_matmul, per_layer_other = 12 * h * h, 13 * h - 4 * h + 4 * h  # biases + 2 LayerNorms
    # gpt2 block: q,k,v,o (4h²) + fc, proj (8h²); biases 3h + h + 4h + h = 9h; two LayerNorms 4h
    per_layer_other = 9 * h + 4 * h
    sp = stage_params(cfg, tp=2, pp=2)
    layers = 2 * (per_layer_matmul / 2 + per_layer_other)
    assert sp.first == pytest.approx(layers + 1000 * h / 2 + 32 * h)
    assert sp.last == pytest.approx(layers + 2 * h + 1000 * h / 2)  # final norm + the tied head's copy
    assert stage_params(cfg, 1, 1).first == param_count(cfg)


# ----------------------------------------------------------------------------- FLOPs
def test_full_recompute_flops_equal_megatron_formula():
    cfg = ModelConfig(preset="gpt3-175B", vocab_size=51200)
    s, L, h, V, batch = 2048, 96, 12288, 51200, 64
    model = flops_per_token(cfg, s) * batch * s
    hardware = model + recompute_flops_per_token(cfg, s, "full") * batch * s
    assert model == pytest.approx(72 * batch * s * L * h * h * (1 + s / (6 * h) + V / (12 * L * h)), rel=1e-12)
    assert hardware == pytest.approx(96 * batch * s * L * h * h * (1 + s / (6 * h) + V / (16 * L * h)), rel=1e-12)
    assert recompute_flops_per_token(cfg, s, "selective") == 4 * L * h * s


# ----------------------------------------------------------------------------- step time
def test_pipeline_time_is_m_slowest_stages_plus_bubble():
    cfg = gpt(n_layer=8)
    wl = Workload(cfg, seq_len=128, global_batch=32)
    est = estimate(wl, toy_cluster(1, 4), Execution(pp=4, micro_batch=2, precision="bf16"))
    stages = est.extras["stage_times_s"]  # first, middle, last
    m, p = est.micro_batches, 4
    t_mean = (stages[0] + 2 * stages[1] + stages[2]) / p
    assert m == 16
    assert est.time.pp_bubble == pytest.approx((p - 1) * t_mean)
    pipeline = est.time.compute + est.time.recompute + est.time.tp_comm + est.time.pp_p2p
    assert pipeline == pytest.approx(m * max(stages))
    # interleaving divides the bubble by v (each stage also sends v× the point-to-point messages)
    est_v = estimate(wl, toy_cluster(1, 4), Execution(pp=4, micro_batch=2, interleave=2, precision="bf16"))
    sv = est_v.extras["stage_times_s"]
    assert est_v.time.pp_bubble == pytest.approx((p - 1) / 2 * (sv[0] + 2 * sv[1] + sv[2]) / p)
    assert est_v.time.pp_p2p == pytest.approx(2 * est.time.pp_p2p)


def test_data_parallel_all_reduce_without_overlap():
    cfg = gpt()
    wl = Workload(cfg, seq_len=128, global_batch=16)
    cluster = toy_cluster(2, 4)
    ex = Execution(dp=8, micro_batch=2, precision="bf16", dp_overlap=False)
    est = estimate(wl, cluster, ex)
    grads = param_count(cfg) * 2  # bf16 gradients
    expected = comms.collective_time(comms.ALL_REDUCE, grads, comms.group_layout(8, 1, 4), cluster)
    assert est.time.dp_comm == pytest.approx(expected)


def test_comm_bytes_per_step():
    cfg = gpt()
    wl = Workload(cfg, seq_len=128, global_batch=16)
    g = param_count(cfg) * 4  # fp32 gradients
    ddp = comm_bytes_per_step(wl, Execution(dp=2, micro_batch=2, precision="fp32"))
    assert ddp["dp"] == pytest.approx(2 * (1 / 2) * g) and ddp["tp"] == 0 and ddp["pp"] == 0
    fsdp = comm_bytes_per_step(wl, Execution(dp=2, micro_batch=2, zero=3, precision="fp32"))
    m = 16 // (2 * 2)
    assert fsdp["dp"] == pytest.approx(m * 0.5 * g + 2 * m * 0.5 * param_count(cfg) * 4)
    tp = comm_bytes_per_step(wl, Execution(tp=2, micro_batch=16, precision="fp32"))
    act = 4 * 16 * 128 * cfg.d_model
    assert tp["tp"] == pytest.approx(cfg.n_layer * 4 * 2 * 0.5 * act)  # 4 all-reduces per layer


def test_run_totals_by_hand():
    cluster = toy_cluster(2, 4)
    cfg = gpt()
    wl = Workload(cfg, seq_len=128, global_batch=16, total_tokens=16 * 128 * 1000)
    est = estimate(wl, cluster, Execution(dp=8, micro_batch=2, precision="bf16"))
    tot = run_totals(est)
    seconds = 1000 * est.step_time_s
    assert tot.steps == pytest.approx(1000)
    assert tot.gpu_hours == pytest.approx(8 * seconds / 3600)
    assert tot.energy_kwh == pytest.approx(2 * 2000 * seconds / 3.6e6 * 1.5)
    assert tot.cost == pytest.approx(tot.gpu_hours * 2.0)
    ckpt = param_count(cfg) * (2 + 12)
    assert tot.checkpoint_gb == pytest.approx(ckpt / 1e9)
    assert tot.checkpoint_write_s == pytest.approx(ckpt / 5e9)  # storage write (5 GB/s) < NICs
    assert tot.data_read_gb_s == pytest.approx(est.tokens_per_s * 2 / 1e9)
    assert math.isclose(est.mfu, est.model_tflops_per_gpu * 1e12 / 100e12)


@pytest.mark.parametrize("kw", [dict(preset="gpt2-14M"), dict(preset="tiny-llama"), dict(preset="llama2-7B", n_layer=2),
                                dict(preset="gpt2-124M", n_layer=2, bias=False)])
def test_parameter_tensor_count_matches_the_built_model(kw):
    from clusterlm.cluster.estimator import param_tensors
    from clusterlm.model.build import build_model

    cfg = ModelConfig(vocab_size=512, **kw)
    assert param_tensors(cfg) == len(list(build_model(cfg, device="meta").parameters()))
