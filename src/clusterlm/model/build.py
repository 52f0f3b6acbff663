"""`build_model(cfg, device)`: the one place a `ModelConfig` becomes an `nn.Module`."""

from __future__ import annotations

import torch
from torch import nn

from clusterlm.model.config import ModelConfig


def build_model(cfg: ModelConfig, device: torch.device | str = "cpu") -> nn.Module:
    """A Transformer (gpt2/llama) or recurrent (rnn/lstm/gru) language model on `device`.

    On "meta" nothing is allocated (parameter counting, planning, or sharding before
    materialising); then call `model.to_empty(device=...)` and `model.init_weights(seed)`.
    On a real device the model comes back initialised with seed 0 (call `init_weights(seed)`
    for another): it is built on meta first so no time goes into a random init thrown away.
    """
    cfg.require_vocab()
    with torch.device("meta"):
        if cfg.is_transformer:
            from clusterlm.model.transformer import Transformer

            model: nn.Module = Transformer(cfg)
        else:
            from clusterlm.model.recurrent import RecurrentLM

            model = RecurrentLM(cfg)
    if torch.device(device).type != "meta":
        model.to_empty(device=device)
        model.init_weights(0)
    return model
