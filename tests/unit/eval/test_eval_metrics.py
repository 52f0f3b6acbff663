from __future__ import annotations

import math

import pytest
import torch

from clusterlm.eval.metrics import TokenStats, generalization_gap


def test_token_stats_match_direct_computation():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    targets = torch.randint(0, 11, (3, 5))
    stats = TokenStats()
    stats.update(logits[:2], targets[:2])  # two batches accumulate exactly
    stats.update(logits[2:], targets[2:])
    logp = torch.log_softmax(logits, -1)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).mean().item()
    top1 = (logits.argmax(-1) == targets).float().mean().item()
    top5 = (logits.topk(5, -1).indices == targets.unsqueeze(-1)).any(-1).float().mean().item()
    s = stats.summary(bytes_per_token=3.5)
    assert s["loss"] == pytest.approx(nll, rel=1e-6)
    assert s["perplexity"] == pytest.approx(math.exp(nll), rel=1e-6)
    assert s["bits_per_token"] == pytest.approx(nll / math.log(2), rel=1e-6)
    assert s["bits_per_byte"] == pytest.approx(nll / math.log(2) / 3.5, rel=1e-6)
    assert s["top1_accuracy"] == pytest.approx(top1)
    assert s["top5_accuracy"] == pytest.approx(top5)
    assert s["tokens"] == 15


def test_perfect_and_uniform_predictions():
    V = 8
    targets = torch.arange(V).unsqueeze(0)
    sure = TokenStats()
    sure.update(torch.eye(V).unsqueeze(0) * 100, targets)
    assert sure.loss == pytest.approx(0.0, abs=1e-6) and sure.top1 == V
    uniform = TokenStats()
    uniform.update(torch.zeros(1, V, V), targets)
    assert uniform.summary()["bits_per_token"] == pytest.approx(3.0)  # log2(8)


def test_generalization_gap_sign():
    assert generalization_gap(2.5, 2.0) == pytest.approx(0.5)
    assert generalization_gap(None, 2.0) is None
