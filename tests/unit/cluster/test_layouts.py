"""The layouts real runs use: uneven pipeline splits, rounded batches, ramp-up, CP, HSDP, FP8, eager kernels."""

from __future__ import annotations

import dataclasses

import pytest

from clusterlm.cluster import comms
from clusterlm.cluster.estimator import Execution, Workload, estimate
from clusterlm.config.pipeline import split_layers
from clusterlm.cluster.spec import load_cluster
from clusterlm.cluster.totals import rampup_phases, run_totals
from clusterlm.errors import ConfigError
from clusterlm.config.model import ModelConfig

from planhelp import gpt, toy_cluster


# ----------------------------------------------------------------------------- pipeline splits
def test_balanced_split_counts_embedding_and_loss_as_layers():
    # Llama 3 405B: 126 layers over 16 stages, one layer fewer on the first and the last (Meta 2024).
    assert split_layers(126, 16).chunks == (7,) + (8,) * 14 + (7,)
    # BLOOM-176B: 70 layers over 12 stages with DeepSpeed's type:transformer|embedding partition.
    assert split_layers(70, 12).chunks == (5,) + (6,) * 10 + (5,)
    # Megatron with p·v = 64 virtual stages: 1, 2, …, 2, 1.
    split = split_layers(126, 8, 8)
    assert split.chunks[0] == split.chunks[-1] == 1 and set(split.chunks[1:-1]) == {2}
    assert split.device_layers[0] == 15 and split.device_layers[-1] == 15 and split.device_layers[3] == 16
    assert split_layers(96, 8).rule == "even"  # auto keeps the even split when it divides
    # A remainder goes to middle stages: 10 layers over 4 stages → 12 units, 3 each.
    assert split_layers(10, 4).chunks == (2, 3, 3, 2)


def test_explicit_stage_layers():
    assert split_layers(8, 4, explicit=(0, 4, 4, 0)).device_layers == (0, 4, 4, 0)  # embedding, loss alone
    with pytest.raises(ConfigError, match="sums to 7 layers but the model has 8"):
        split_layers(8, 4, explicit=(1, 2, 2, 2))
    with pytest.raises(ConfigError, match="only the first and last stage may be 0"):
        split_layers(8, 4, explicit=(2, 0, 4, 2))
    with pytest.raises(ConfigError, match="p·v = 2·2 = 4 pipeline stages"):
        split_layers(8, 2, 2, explicit=(4, 4))


def test_uneven_stages_set_the_pipeline_pace():
    wl = Workload(gpt(n_layer=10), seq_len=128, global_batch=32)
    est = estimate(wl, toy_cluster(1, 4), Execution(pp=4, micro_batch=2))  # 2, 3, 3, 2
    times = est.extras["stage_times_s"]
    assert est.split.chunks == (2, 3, 3, 2) and times[1] == pytest.approx(times[2]) and times[1] > times[0]
    skewed = estimate(wl, toy_cluster(1, 4), Execution(pp=4, micro_batch=2, stage_layers=(1, 4, 4, 1)))
    assert skewed.step_time_s > est.step_time_s  # the slowest stage sets the pace


# ----------------------------------------------------------------------------- batches
def test_indivisible_batch_is_rounded_and_reported():
    wl = Workload(gpt(), seq_len=128, global_batch=1000)
    est = estimate(wl, toy_cluster(2, 4), Execution(dp=8, micro_batch=4))  # 1000/32 = 31.25 → 31
    assert est.micro_batches == 31 and est.global_batch == 992 and est.tokens_per_step == 992 * 128
    up = estimate(dataclasses.replace(wl, batch_rounding="up"), toy_cluster(2, 4), Execution(dp=8, micro_batch=4))
    assert up.global_batch == 1024


def test_batch_rampup_adds_smaller_steps_to_the_run():
    assert rampup_phases(192, 16, 9_765_625, 2048)[:2] == [(192, 9_765_625 / 116), (208, 9_765_625 / 116)]
    assert len(rampup_phases(192, 16, 9_765_625, 2048)) == 116
    cluster, ex = toy_cluster(1, 4), Execution(dp=4, micro_batch=2)
    plain = Workload(gpt(), seq_len=128, global_batch=32, total_tokens=32 * 128 * 100)
    ramped = dataclasses.replace(plain, batch_rampup=(16, 8, 800))
    base, ramp = run_totals(estimate(plain, cluster, ex)), run_totals(estimate(ramped, cluster, ex))
    assert base.steps == pytest.approx(100) and base.rampup_steps == 0
    # Megatron's schedule: 400 sequences at batch 16 (25 steps), 400 at 24 (16.7 steps), the other
    # 2400 of the 3200 at 32 (75 steps)
    assert ramp.rampup_steps == pytest.approx(25 + 400 / 24) and ramp.steps == pytest.approx(25 + 400 / 24 + 75)
    assert ramp.days > base.days  # same tokens in more, less efficient steps
    with pytest.raises(ConfigError, match="multiple of the increment"):
        rampup_phases(10, 7, 100, 32)


# ----------------------------------------------------------------------------- context parallel
def test_context_parallel_splits_tokens_and_attention():
    cfg = ModelConfig(style="llama", n_layer=4, n_head=8, n_kv_head=2, d_model=512, vocab_size=1000,
                      max_seq_len=4096)
    wl = Workload(cfg, seq_len=4096, global_batch=8)
    cluster = toy_cluster(1, 8)
    one = estimate(wl, cluster.scaled(2), Execution(dp=2, micro_batch=1))
    two = estimate(wl, cluster.scaled(4), Execution(dp=2, cp=2, micro_batch=1))
    assert two.time.cp_comm > 0 and one.time.cp_comm == 0
    # each context rank does half the layer work, and keeps half the activations
    assert two.extras["layer_fwd_s"] == pytest.approx(one.extras["layer_fwd_s"] / 2, rel=0.05)
    assert two.memory.activations == pytest.approx(one.memory.activations / 2, rel=1e-6)
    assert two.model_flops_per_step == one.model_flops_per_step  # same tokens trained
    with pytest.raises(ConfigError, match="divisible by c=3"):
        estimate(Workload(cfg, seq_len=4096, global_batch=6), toy_cluster(3, 2), Execution(dp=2, cp=3))


def test_rank_layout_with_context_and_hsdp():
    groups = comms.layout(toy_cluster(4, 8), tp=2, dp=8, pp=1, cp=2, dp_shard=2)
    assert groups.cp == comms.Group(2, 2)  # stride 2 inside the node
    assert groups.dp.size == 16 and groups.shard.size == 4 and groups.replicate.size == 4
    assert groups.replicate.per_node == 1  # replicas sit on different nodes


# ----------------------------------------------------------------------------- HSDP, FP8, kernels, recompute
def test_hsdp_shards_state_over_the_shard_group_only():
    wl = Workload(gpt(), seq_len=128, global_batch=16)
    full = estimate(wl, toy_cluster(2, 4), Execution(dp=8, micro_batch=2, zero=3))
    hsdp = estimate(wl, toy_cluster(2, 4), Execution(dp=8, micro_batch=2, zero=3, dp_shard=4))
    assert hsdp.memory.optimizer == pytest.approx(2 * full.memory.optimizer)
    assert hsdp.memory.weights == pytest.approx(2 * full.memory.weights)
    with pytest.raises(ConfigError, match="needs ZeRO/FSDP sharding"):
        estimate(wl, toy_cluster(2, 4), Execution(dp=8, micro_batch=2, dp_shard=4))


def test_fp8_speeds_up_layer_gemms_on_hopper_only():
    wl = Workload(ModelConfig(preset="llama3-8B"), seq_len=8192, global_batch=8)
    h100 = load_cluster("dgx-h100", 8)
    bf16 = estimate(wl, h100, Execution(dp=8, zero=3))
    fp8 = estimate(wl, h100, Execution(dp=8, zero=3, fp8=True))
    assert fp8.extras["layer_fwd_s"] < 0.85 * bf16.extras["layer_fwd_s"]
    assert fp8.model_flops_per_step == bf16.model_flops_per_step
    with pytest.raises(ConfigError, match="no FP8 tensor cores"):
        estimate(wl, load_cluster("dgx-a100-superpod", 8), Execution(dp=8, fp8=True))


def test_eager_elementwise_costs_llama_time_not_gpt2():
    wl = Workload(ModelConfig(preset="llama3-8B"), seq_len=4096, global_batch=8)
    cluster = load_cluster("dgx-a100-superpod", 8)
    fused = estimate(wl, cluster, Execution(dp=8, zero=3))
    eager = estimate(wl, cluster, Execution(dp=8, zero=3, elementwise="eager"))
    assert 1.02 < eager.step_time_s / fused.step_time_s < 1.3
    wl2 = Workload(gpt(), seq_len=128, global_batch=16)
    a = estimate(wl2, toy_cluster(2, 4), Execution(dp=8, micro_batch=2))
    b = estimate(wl2, toy_cluster(2, 4), Execution(dp=8, micro_batch=2, elementwise="eager"))
    assert a.step_time_s == b.step_time_s  # LayerNorm and GeLU are single kernels in eager PyTorch too


def test_partial_full_recompute_interpolates():
    wl = Workload(gpt(), seq_len=128, global_batch=16)
    cl = toy_cluster(2, 4)
    none, full = (estimate(wl, cl, Execution(dp=8, micro_batch=2, recompute=r)) for r in ("none", "full"))
    half = estimate(wl, cl, Execution(dp=8, micro_batch=2, recompute="full", recompute_fraction=0.5))
    assert half.time.recompute == pytest.approx(full.time.recompute / 2)
    assert half.memory.activations == pytest.approx((none.memory.activations + full.memory.activations) / 2)
