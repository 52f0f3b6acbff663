"""RNN, LSTM and GRU language models: the baselines the Transformer is compared against.

    tokens (B, T) → tok_embeddings → dropout → nn.RNN/LSTM/GRU (n_layer, width d_model) → dropout → output → logits

Same contract as the Transformer (`forward(tokens) -> logits`, `init_weights(seed)`, meta-device
build), so the same trainer, eval and generator run them. The recurrent layer is a stock
`torch.nn` module — its fused kernels are much faster than a Python loop over time steps —
and its parameter layout (per layer: weight_ih, weight_hh, bias_ih, bias_hh, times 1/4/3 gates)
is what `model/flops.py` counts.

Generation keeps the recurrent hidden state instead of a KV cache: the "cache" passed to
`forward` is a `clusterlm.generate.kv_cache.RecurrentState`, which holds it between calls.
A recurrent model has no positional limit, so `max_seq_len` only sets training windows.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from clusterlm.config.model import RECURRENT_STYLES, ModelConfig
from clusterlm.model.layers import seeded_rng
from clusterlm.model.loss import linear_cross_entropy

_CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.style not in RECURRENT_STYLES:
            raise ValueError(f"RecurrentLM needs style rnn, lstm or gru, got {cfg.style}")
        self.config = cfg
        V, d = cfg.require_vocab(), cfg.d_model
        self.tok_embeddings = nn.Embedding(V, d)
        self.dropout = nn.Dropout(cfg.dropout)
        # Hidden width = embedding width, so a tied head maps the last layer straight to logits.
        # torch applies `dropout` between stacked layers; the outer Dropout covers input and output.
        self.rnn = _CELLS[cfg.style](d, d, num_layers=cfg.n_layer, batch_first=True,
                                     dropout=cfg.dropout if cfg.n_layer > 1 else 0.0)
        self.output = nn.Linear(d, V, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight

    def to_empty(self, *, device: torch.device | str | None, recurse: bool = True) -> RecurrentLM:
        super().to_empty(device=device, recurse=recurse)
        self.tie_weights()  # leaving the meta device unties shared parameters; see Transformer
        return self

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        cfg = self.config
        with seeded_rng(seed, self.tok_embeddings.weight.device):
            nn.init.normal_(self.tok_embeddings.weight, mean=0.0, std=cfg.init_std)
            # torch's default for recurrent weights, U(−1/√d, 1/√d), keeps tanh/sigmoid units
            # out of saturation at the start.
            bound = 1.0 / math.sqrt(cfg.d_model)
            for weight in self.rnn.parameters():
                nn.init.uniform_(weight, -bound, bound)
            if cfg.style == "lstm":
                # Forget-gate bias 1 (Jozefowicz et al. 2015): remember by default, so gradients
                # flow through long spans early in training. Gate order is i, f, g, o.
                d = cfg.d_model
                for name, bias in self.rnn.named_parameters():
                    if name.startswith("bias_ih"):
                        bias[d : 2 * d].fill_(1.0)
                    elif name.startswith("bias_hh"):
                        bias[d : 2 * d].zero_()
            if not cfg.tie_embeddings:
                nn.init.normal_(self.output.weight, mean=0.0, std=cfg.init_std)

    def init_buffers(self) -> None:
        """No derived buffers (kept for the same interface as the Transformer)."""

    def forward(self, tokens: torch.Tensor, kv_cache: Any = None, start_pos: int = 0,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V). With `kv_cache` (a RecurrentState) continue from its hidden state;
        with `targets` (B, T) return the mean cross-entropy instead (see Transformer.forward)."""
        hidden = None
        if kv_cache is not None:
            if start_pos != kv_cache.position:
                raise ValueError(
                    f"a recurrent state cannot rewind: it has consumed {kv_cache.position} tokens, "
                    f"asked to continue at {start_pos}"
                )
            hidden = kv_cache.hidden
        x = self.dropout(self.tok_embeddings(tokens))  # (B, T, C)
        x, hidden = self.rnn(x, hidden)  # (B, T, C); hidden: (L, B, C) — a pair of them for LSTM
        if kv_cache is not None:
            kv_cache.hidden = hidden
            kv_cache.position += tokens.shape[1]
        x = self.dropout(x)
        if targets is not None:
            return linear_cross_entropy(x.flatten(0, 1), self.output.weight, targets.flatten())
        return self.output(x)  # (B, T, V)
