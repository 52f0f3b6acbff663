"""Property tests: monotonicity the physics demands, over random models and layouts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterlm.cluster.estimator import Execution, Workload, estimate
from clusterlm.cluster.memory import ActivationShape, layer_activation_bytes

from planhelp import gpt, toy_cluster

CLUSTER = toy_cluster(nodes=8, gpus_per_node=8)  # 64 accelerators

models = st.builds(
    lambda layers, heads, width, vocab: gpt(n_layer=layers, n_head=heads, d_model=heads * width, vocab=vocab,
                                            seq=256),
    layers=st.sampled_from([2, 4, 8]), heads=st.sampled_from([4, 8, 16]), width=st.sampled_from([16, 32, 64]),
    vocab=st.integers(256, 50_000))


@settings(max_examples=40, deadline=None)
@given(cfg=models, zero=st.just(3), d_small=st.sampled_from([1, 2, 4]), factor=st.sampled_from([2, 4, 8]))
def test_more_gpus_never_increase_weight_memory_under_zero3(cfg, zero, d_small, factor):
    d_large = d_small * factor
    wl = Workload(cfg, seq_len=128, global_batch=64)
    small = estimate(wl, CLUSTER.scaled(d_small), Execution(dp=d_small, zero=zero, micro_batch=1))
    large = estimate(wl, CLUSTER.scaled(d_large), Execution(dp=d_large, zero=zero, micro_batch=1))
    assert large.memory.weights <= small.memory.weights
    assert large.memory.grads <= small.memory.grads and large.memory.optimizer <= small.memory.optimizer


shapes = st.builds(
    ActivationShape,
    b=st.integers(1, 8), s=st.sampled_from([128, 512, 2048]), h=st.sampled_from([256, 1024, 4096]),
    heads=st.sampled_from([8, 16]), kv_heads=st.sampled_from([8]), head_dim=st.sampled_from([32, 128]),
    ff=st.sampled_from([1024, 4096, 11008]), gated=st.booleans(), dropout=st.booleans(),
    t=st.sampled_from([1, 2, 8]), sp=st.booleans(), flash=st.booleans(), elem_bytes=st.sampled_from([2, 4]))


@settings(max_examples=200, deadline=None)
@given(shape=shapes)
def test_more_recompute_never_increases_activation_memory(shape):
    none, selective, full = (layer_activation_bytes(shape, m) for m in ("none", "selective", "full"))
    assert none >= selective >= full > 0


@settings(max_examples=30, deadline=None)
@given(cfg=models, rec=st.sampled_from(["none", "selective", "full"]))
def test_recompute_modes_order_memory_and_time(cfg, rec):
    wl = Workload(cfg, seq_len=128, global_batch=16)
    ests = {m: estimate(wl, CLUSTER.scaled(8), Execution(tp=2, dp=4, micro_batch=4, recompute=m,
                                                          sequence_parallel=True, attention="eager"))
            for m in ("none", "selective", "full")}
    assert ests["none"].memory.activations >= ests["selective"].memory.activations >= ests["full"].memory.activations
    # recomputation costs time, never saves it
    assert ests["full"].step_time_s >= ests["selective"].step_time_s >= ests["none"].step_time_s
    assert ests[rec].hardware_flops_per_step >= ests[rec].model_flops_per_step


@settings(max_examples=30, deadline=None)
@given(cfg=models, b=st.sampled_from([1, 2, 4]))
def test_estimates_are_positive_and_consistent(cfg, b):
    wl = Workload(cfg, seq_len=128, global_batch=32)
    est = estimate(wl, CLUSTER.scaled(4), Execution(dp=4, micro_batch=b))
    assert est.step_time_s > 0 and est.tokens_per_s > 0
    assert 0 < est.mfu < 1
    assert abs(est.time.total - sum(v for k, v in est.time.as_dict().items() if k != "total")) < 1e-12
