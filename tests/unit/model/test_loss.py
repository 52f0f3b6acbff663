"""The fused output-projection + cross-entropy equals the plain path, value and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clusterlm.model.build import build_model
from clusterlm.config.model import ModelConfig
from clusterlm.model.loss import linear_cross_entropy


@pytest.mark.parametrize("kw", [dict(style="gpt2", n_head=2), dict(style="llama", n_head=4, n_kv_head=2),
                                dict(style="lstm"), dict(style="gpt2", n_head=2, tie_embeddings=False)])
def test_forward_with_targets_matches_plain_cross_entropy(kw, monkeypatch):
    monkeypatch.setattr("clusterlm.model.loss._rows_per_chunk", lambda vocab_size: 40)  # 96 rows → 3 chunks
    cfg = ModelConfig(**kw, n_layer=2, d_model=32, vocab_size=300, max_seq_len=48)
    model = build_model(cfg)
    tokens, targets = torch.randint(0, 300, (2, 2, 48), generator=torch.Generator().manual_seed(0))
    plain = F.cross_entropy(model(tokens).flatten(0, 1).float(), targets.flatten())
    plain.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    fused = model(tokens, targets=targets)
    fused.backward()
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, targets=targets), plain.detach(), rtol=1e-5, atol=1e-6)


def test_linear_cross_entropy_scales_with_upstream_gradient():
    h = torch.randn(5, 4, requires_grad=True)
    w = torch.randn(7, 4, requires_grad=True)
    t = torch.randint(0, 7, (5,))
    (3.0 * linear_cross_entropy(h, w, t)).backward()
    grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    (3.0 * F.cross_entropy(h @ w.t(), t)).backward()
    torch.testing.assert_close(grads[0], h.grad)
    torch.testing.assert_close(grads[1], w.grad)


def test_fused_loss_under_bf16_autocast_tracks_the_plain_path():
    cfg = ModelConfig(style="llama", n_layer=1, n_head=2, d_model=32, vocab_size=64, max_seq_len=8)
    model = build_model(cfg)
    tokens, targets = torch.randint(0, 64, (2, 2, 8), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.cross_entropy(model(tokens).flatten(0, 1).float(), targets.flatten())
        fused = model(tokens, targets=targets)
    fused.backward()
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, plain, rtol=2e-2, atol=2e-2)
    assert all(p.grad is not None and p.grad.dtype == p.dtype for p in model.parameters())
