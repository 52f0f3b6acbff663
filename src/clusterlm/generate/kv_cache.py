"""Decoding state carried between forward calls: a key/value cache or a recurrent hidden state.

Without a cache, producing token n re-runs the model over all n previous tokens; with one,
each attention layer keeps the keys and values it already computed and the model only
processes the new token, turning O(n²) work per sequence into O(n).

`KVCache` preallocates one (B, Hkv, S_max, D) key and value buffer per layer and writes each
new chunk in place, so decoding never reallocates or concatenates (which would copy the whole
cache every step). The buffers are allocated on the first write, with the dtype and head count
the keys actually arrive in (fp32, or bf16 under autocast; local heads under TP), which makes
one cache work for both Transformer styles. Llama's grouped-query attention caches only the
Hkv key/value heads — that is where its memory saving comes from.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class LayerKVCache:
    """One attention layer's keys and values for positions 0 … max_seq_len − 1."""

    def __init__(self, max_seq_len: int):
        self.max_seq_len = max_seq_len
        self.k: torch.Tensor | None = None  # (B, Hkv, S_max, D)
        self.v: torch.Tensor | None = None

    def update(self, k: torch.Tensor, v: torch.Tensor, start_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, Hkv, T, D) keys/values at start_pos; return all of 0 … start_pos + T − 1."""
        end = start_pos + k.shape[2]
        if end > self.max_seq_len:
            raise ValueError(f"KV cache holds {self.max_seq_len} positions, asked to write up to {end}")
        if self.k is None or self.k.shape[:2] != k.shape[:2] or self.k.dtype != k.dtype:
            B, H, _, D = k.shape
            self.k = k.new_empty(B, H, self.max_seq_len, D)
            self.v = v.new_empty(B, H, self.max_seq_len, D)
        self.k[:, :, start_pos:end] = k
        self.v[:, :, start_pos:end] = v
        # Views, not copies; stale entries past `end` (from before a reset) are never read.
        return self.k[:, :, :end], self.v[:, :, :end]


class KVCache:
    """Per-layer caches for a Transformer; pass as `model(tokens, kv_cache=cache, start_pos=p)`."""

    def __init__(self, n_layer: int, max_seq_len: int):
        self.max_seq_len = max_seq_len
        self.layers = [LayerKVCache(max_seq_len) for _ in range(n_layer)]

    def layer(self, index: int) -> LayerKVCache:
        return self.layers[index]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for c in self.layers for t in (c.k, c.v) if t is not None)


class RecurrentState:
    """The hidden state of an RNN/LSTM/GRU between calls, and how many tokens it has consumed."""

    def __init__(self) -> None:
        self.hidden: Any = None  # (L, B, C), or an (h, c) pair for LSTM; None = zeros
        self.position = 0


def new_cache(model: nn.Module, max_seq_len: int | None = None) -> KVCache | RecurrentState:
    """The decoding state that fits `model` (a Transformer or a recurrent model)."""
    cfg = model.config
    if cfg.is_transformer:
        return KVCache(cfg.n_layer, max_seq_len or cfg.max_seq_len)
    return RecurrentState()
