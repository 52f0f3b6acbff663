from __future__ import annotations

import io
import random

import numpy as np
import torch

from clusterlm.train.state import RNGState, TrainState


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_rng_state_restores_python_numpy_torch_and_loads_weights_only():
    rng = RNGState()
    saved = _roundtrip(rng.state_dict())
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(3)  # move on
    rng.load_state_dict(saved)
    got = (random.random(), float(np.random.rand()), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1]
    assert torch.equal(got[2], expected[2])


def test_train_state_roundtrip_weights_only():
    s = TrainState(step=7, tokens_seen=700, elapsed_s=1.5, nonfinite_steps=1, best_val_loss=float("inf"))
    t = TrainState()
    t.load_state_dict(_roundtrip(s.state_dict()))
    assert t == s


def test_optimizer_state_loads_weights_only():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([{"params": [p], "name": "decay", "weight_decay": 0.1}])
    p.grad = torch.ones(3)
    opt.step()
    saved = _roundtrip(opt.state_dict())
    assert saved["param_groups"][0]["name"] == "decay"
    assert torch.equal(saved["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
