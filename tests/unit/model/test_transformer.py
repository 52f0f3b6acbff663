"""Transformer behaviour the rest of the project relies on."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from clusterlm.model.build import build_model
from clusterlm.config.model import ModelConfig
from clusterlm.model.layers import Attention, rope_tables

STYLES = {"gpt2": dict(style="gpt2", n_head=4), "llama": dict(style="llama", n_head=4, n_kv_head=2)}


def _cfg(style: str, **kw) -> ModelConfig:
    return ModelConfig(**STYLES[style], n_layer=2, d_model=32, vocab_size=53, max_seq_len=16, **kw)


@pytest.mark.parametrize("style", list(STYLES))
def test_logits_are_causal(style):
    model = build_model(_cfg(style)).eval()
    tokens = torch.randint(0, 53, (1, 12), generator=torch.Generator().manual_seed(0))
    changed = tokens.clone()
    changed[0, 7] = (changed[0, 7] + 1) % 53
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("style", list(STYLES))
def test_dropout_only_in_training_mode(style):
    model = build_model(_cfg(style, dropout=0.5))
    tokens = torch.randint(0, 53, (2, 10))
    assert not torch.equal(model.train()(tokens), model(tokens))
    with torch.no_grad():
        assert torch.equal(model.eval()(tokens), model(tokens))


def test_residual_projections_get_the_scaled_init():
    cfg = ModelConfig(style="gpt2", n_layer=8, n_head=4, d_model=256, vocab_size=53, max_seq_len=16)
    block = build_model(cfg).layers["3"]
    assert block.attention.wq.weight.std().item() == pytest.approx(0.02, rel=0.05)
    for residual in (block.attention.wo.weight, block.feed_forward.w2.weight):
        assert residual.std().item() == pytest.approx(0.02 / 4.0, rel=0.05)  # std / √(2·8)


def test_context_overflow_is_a_clear_error():
    model = build_model(_cfg("gpt2"))
    with pytest.raises(ValueError, match="exceed the model's context of 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_attention_runs_on_head_shards_like_tensor_parallelism():
    """Split wq/wk/wv by rows and wo by columns (what TP does); the shard outputs sum to the whole."""
    cfg = _cfg("llama")
    full = Attention(cfg).eval()
    x = torch.randn(2, 9, 32)
    cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
    rope = (cos[:9], sin[:9])
    with torch.no_grad():
        expected = full(x, rope)
        total = torch.zeros_like(expected)
        q_rows, kv_rows = 32 // 2, (2 * cfg.head_dim) // 2  # 2 of 4 query heads, 1 of 2 KV heads per shard
        for r in range(2):
            shard = copy.deepcopy(full)
            shard.wq.weight = nn.Parameter(full.wq.weight[r * q_rows:(r + 1) * q_rows])
            shard.wk.weight = nn.Parameter(full.wk.weight[r * kv_rows:(r + 1) * kv_rows])
            shard.wv.weight = nn.Parameter(full.wv.weight[r * kv_rows:(r + 1) * kv_rows])
            shard.wo.weight = nn.Parameter(full.wo.weight[:, r * q_rows:(r + 1) * q_rows])
            total += shard(x, rope)
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-6)
