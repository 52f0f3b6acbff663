from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from clusterlm.train.trainer import Trainer


# torch.compile of even a tiny model takes ~10 s on 2 CPU cores; it backs docs/training.md's compile claim.
def test_compiled_training_matches_eager_and_saves_plain_state_dict(tiny_cfg):
    eager = Trainer(tiny_cfg("eager", "train.max_steps=3"), progress=False).run()
    compiled = Trainer(tiny_cfg("compiled", "train.max_steps=3", "train.compile=true"), progress=False).run()
    a, b = load_file(str(eager.checkpoint / "model.safetensors")), load_file(str(compiled.checkpoint / "model.safetensors"))
    assert a.keys() == b.keys() and not any("_orig_mod" in k for k in b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
