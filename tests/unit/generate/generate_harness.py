"""Tiny seeded models of every style, shared by the generate tests."""

from __future__ import annotations

import torch

from clusterlm.generate.sampling import SamplingSettings
from clusterlm.model.build import build_model
from clusterlm.config.model import ModelConfig

VOCAB = 61
STYLES = {
    "gpt2": dict(style="gpt2", n_layer=2, n_head=2, d_model=32),
    "llama-gqa": dict(style="llama", n_layer=2, n_head=4, n_kv_head=2, d_model=32),
    "lstm": dict(style="lstm", n_layer=2, d_model=32),
    "gru": dict(style="gru", n_layer=2, d_model=32),
    "rnn": dict(style="rnn", n_layer=1, d_model=32),
}
GREEDY = SamplingSettings(temperature=0.0)


def tiny_model(name: str, max_seq_len: int = 16) -> torch.nn.Module:
    # A larger init spreads the logits, so greedy decoding wanders instead of repeating one token.
    cfg = ModelConfig(**STYLES[name], vocab_size=VOCAB, max_seq_len=max_seq_len, init_std=0.3)
    model = build_model(cfg)
    model.init_weights(seed=3)
    if not cfg.is_transformer:
        with torch.no_grad():  # likewise, stronger recurrent weights
            for p in model.rnn.parameters():
                p.mul_(2.0)
    return model.eval()
