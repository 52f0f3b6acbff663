from __future__ import annotations

import pytest

from clusterlm.config.model import ModelConfig
from clusterlm.model.flops import flops_per_token, matmul_param_count, mfu, param_count


def test_gpt2_124m_param_count_by_hand():
    cfg = ModelConfig(preset="gpt2-124M")
    # wte 50257·768 + wpe 1024·768 + 12 · 7,087,872 per block + final LayerNorm 2·768
    assert param_count(cfg) == 38_597_376 + 786_432 + 12 * 7_087_872 + 1_536


def test_flops_per_token_palm_formula():
    cfg = ModelConfig(style="gpt2", n_layer=2, n_head=2, d_model=8, vocab_size=10, max_seq_len=4)
    # block matmul weights: 2 · (4·8·8 attention + 2·8·32 MLP) = 1536; head 10·8 = 80
    assert matmul_param_count(cfg) == 1536 + 80
    assert flops_per_token(cfg, seq_len=4) == 6 * 1616 + 12 * 2 * 8 * 4
    assert flops_per_token(cfg, seq_len=4, training=False) == (6 * 1616 + 12 * 2 * 8 * 4) / 3


def test_mfu_is_ratio_to_peak():
    cfg = ModelConfig(preset="tiny", vocab_size=100)
    fpt = flops_per_token(cfg, 64)
    assert mfu(1000.0, cfg, 64, peak_flops=fpt * 2000.0) == pytest.approx(0.5)
