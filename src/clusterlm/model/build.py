"""`build_model(cfg, device)`: the one place a `ModelConfig` becomes an `nn.Module`."""

from __future__ import annotations

import torch
from torch import nn

from clusterlm.config.model import ModelConfig
from clusterlm.model.flops import param_count
from clusterlm.model.recurrent import RecurrentLM
from clusterlm.model.transformer import Transformer


def build_model(cfg: ModelConfig, device: torch.device | str = "cpu", seed: int | None = 0) -> nn.Module:
    """A Transformer (gpt2/llama) or recurrent (rnn/lstm/gru) language model on `device`.

    On "meta" nothing is allocated (parameter counting, planning, or sharding before
    materialising); then call `model.to_empty(device=...)` and `model.init_weights(seed)`.
    On a real device the model comes back initialised with `seed` (`model/init.py`: the same
    weights any sharded layout would get), or with torch's constructor defaults when `seed` is
    None (weights about to be loaded).
    """
    cfg.require_vocab()
    # Built directly on the device rather than via meta + to_empty: torch's first meta-tensor
    # init imports its Python reference kernels (~1 s), more than the discarded default init
    # costs for models that fit one device.
    with torch.device(device):
        model: nn.Module = Transformer(cfg) if cfg.is_transformer else RecurrentLM(cfg)
    if torch.device(device).type != "meta" and seed is not None:
        model.init_weights(seed)
    return model


def model_bytes(cfg: ModelConfig) -> tuple[int, int]:
    """(parameters, fp32 bytes of the built model: weights plus the RoPE tables) — without building it."""
    params = param_count(cfg)
    rope = 2 * cfg.max_seq_len * cfg.head_dim * 4 if cfg.style == "llama" else 0  # cos and sin, fp32
    return params, 4 * params + rope
