"""Impossible inputs are one clear ConfigError each."""

from __future__ import annotations

import pytest

from clusterlm.cluster.estimator import Execution, Workload, estimate
from clusterlm.cluster.spec import load_cluster
from clusterlm.errors import ConfigError
from clusterlm.config.model import ModelConfig

from planhelp import gpt, toy_cluster

CL = toy_cluster(2, 4)


def _est(cfg=None, batch=16, **ex):
    return estimate(Workload(cfg or gpt(n_head=8, n_layer=4), seq_len=128, global_batch=batch), CL,
                    Execution(**ex))


@pytest.mark.parametrize("ex,batch,pattern", [
    (dict(tp=8, micro_batch=16), 16, None),  # valid: 8 heads, t=8
    (dict(tp=8, dp=1, micro_batch=16), 16, None),
])
def test_valid_layouts(ex, batch, pattern):
    assert _est(batch=batch, **ex).step_time_s > 0


def test_heads_not_divisible_by_t():
    with pytest.raises(ConfigError, match=r"attention heads \(6\) are not divisible by tensor parallel t=4"):
        estimate(Workload(gpt(n_head=6, d_model=192), seq_len=128, global_batch=2), CL,
                 Execution(tp=4, dp=2, micro_batch=1))


def test_layers_not_divisible_by_p():
    with pytest.raises(ConfigError, match=r"layers \(6\) are not divisible by pipeline stages p=4"):
        estimate(Workload(gpt(n_layer=6), seq_len=128, global_batch=8), CL, Execution(pp=4, dp=2, micro_batch=1))
    with pytest.raises(ConfigError, match=r"p·v=2·4"):
        estimate(Workload(gpt(n_layer=6), seq_len=128, global_batch=8), CL,
                 Execution(pp=2, interleave=4, dp=4, micro_batch=1))


def test_batch_not_divisible_by_d_times_b():
    with pytest.raises(ConfigError, match=r"global batch \(12\) is not divisible by d·b = 8·1 = 8"):
        _est(batch=12, dp=8, micro_batch=1)


def test_degrees_must_match_the_cluster():
    with pytest.raises(ConfigError, match="t·p·d = 2·1·2 = 4 but the cluster has 8"):
        _est(tp=2, dp=2, micro_batch=1)


def test_unknown_accelerator_precision_and_modes():
    v100 = load_cluster("dgx-a100-superpod")
    with pytest.raises(ConfigError, match="recompute must be one of"):
        _est(dp=8, micro_batch=2, recompute="some")
    with pytest.raises(ConfigError, match="no fp8 peak|precision must be one of"):
        _est(dp=8, micro_batch=2, precision="fp8")
    assert v100.acc.name == "a100-80gb"


def test_gqa_kv_heads_must_divide_with_t():
    cfg = ModelConfig(style="llama", n_layer=2, n_head=12, n_kv_head=3, d_model=384, vocab_size=512)
    with pytest.raises(ConfigError, match="key/value heads"):
        estimate(Workload(cfg, seq_len=64, global_batch=8), toy_cluster(1, 4), Execution(tp=4, micro_batch=8))


def test_sequence_longer_than_learned_positions():
    with pytest.raises(ConfigError, match="exceeds the model's learned positions"):
        estimate(Workload(gpt(seq=128), seq_len=256, global_batch=8), CL, Execution(dp=8, micro_batch=1))


def test_non_transformer_is_refused():
    cfg = ModelConfig(style="lstm", n_layer=2, d_model=64, vocab_size=100)
    with pytest.raises(ConfigError, match="models transformers"):
        estimate(Workload(cfg, seq_len=64, global_batch=8), CL, Execution(dp=8, micro_batch=1))
