"""`build_model(cfg, device)`: the one place a `ModelConfig` becomes an `nn.Module`."""

from __future__ import annotations

import torch
from torch import nn

from clusterlm.config.model import ModelConfig
from clusterlm.model.recurrent import RecurrentLM
from clusterlm.model.transformer import Transformer


def build_model(cfg: ModelConfig, device: torch.device | str = "cpu") -> nn.Module:
    """A Transformer (gpt2/llama) or recurrent (rnn/lstm/gru) language model on `device`.

    On "meta" nothing is allocated (parameter counting, planning, or sharding before
    materialising); then call `model.to_empty(device=...)` and `model.init_weights(seed)`.
    On a real device the model comes back initialised with seed 0 (call `init_weights(seed)`
    for another).
    """
    cfg.require_vocab()
    # Built directly on the device rather than via meta + to_empty: torch's first meta-tensor
    # init imports its Python reference kernels (~1 s), more than the discarded default init
    # costs for models that fit one device.
    with torch.device(device):
        model: nn.Module = Transformer(cfg) if cfg.is_transformer else RecurrentLM(cfg)
    if torch.device(device).type != "meta":
        model.init_weights(0)
    return model
