from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clusterlm.config.train import TrainConfig
from clusterlm.train.optim import WarmupCosineSchedule, build_optimizer, param_groups


class _TinyLM(nn.Module):
    """Stand-in with every parameter kind the real models have (embedding tied to head)."""

    def __init__(self) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(10, 4)
        self.pos_embeddings = nn.Embedding(8, 4)
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.output = nn.Linear(4, 10, bias=False)
        self.output.weight = self.tok_embeddings.weight


def test_weight_decay_only_on_matrices_not_norms_biases_embeddings():
    model = _TinyLM()
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    assert decayed == {id(model.proj.weight)}
    not_decayed = {id(p) for p in no_decay["params"]}
    assert not_decayed == {id(model.tok_embeddings.weight), id(model.pos_embeddings.weight),
                           id(model.proj.bias), id(model.norm.weight), id(model.norm.bias)}
    # the tied head is the embedding tensor: listed once, not decayed
    total = len(decay["params"]) + len(no_decay["params"])
    assert total == len(list(model.parameters()))


def test_decay_actually_shrinks_only_decayed_group():
    model = _TinyLM()
    opt = build_optimizer(model, TrainConfig(lr=0.1, weight_decay=0.5))
    before_w = model.proj.weight.detach().clone()
    before_e = model.tok_embeddings.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradient: only decoupled weight decay moves weights
    assert torch.allclose(model.proj.weight, before_w * (1 - 0.1 * 0.5))
    assert torch.equal(model.tok_embeddings.weight, before_e)


def test_schedule_warmup_peak_and_cosine_floor():
    s = WarmupCosineSchedule(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, max_steps=110)
    lrs = [s.lr_at(i) for i in range(111)]
    assert lrs[0] == pytest.approx(1 / 11)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # linear ramp
    assert lrs[10] == pytest.approx(1.0)  # decay starts at the peak
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the cosine
    assert lrs[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone decay


def test_time_budget_drives_decay_and_is_saved():
    s = WarmupCosineSchedule(lr=1.0, min_lr_ratio=0.0, warmup_steps=2, max_steps=10**9, budget_s=100.0)
    s.lr_at(0, 0.0)
    assert s.lr_at(2, 20.0) == pytest.approx(1.0)  # warmup ended at 20 % of the budget
    assert s.lr_at(3, 60.0) == pytest.approx(0.5)  # halfway between 20 % and 100 %
    assert s.lr_at(4, 100.0) == pytest.approx(0.0)
    restored = WarmupCosineSchedule(lr=1.0, min_lr_ratio=0.0, warmup_steps=2, max_steps=10**9, budget_s=100.0)
    restored.load_state_dict(s.state_dict())
    assert restored.lr_at(5, 60.0) == pytest.approx(0.5)


def test_apply_sets_every_group():
    model = _TinyLM()
    opt = build_optimizer(model, TrainConfig(lr=1.0, warmup_steps=0, max_steps=4))
    s = WarmupCosineSchedule.from_config(TrainConfig(lr=1.0, warmup_steps=0, max_steps=4, min_lr_ratio=0))
    lr = s.apply(opt, 2)
    assert lr == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(g["lr"] == lr for g in opt.param_groups)
