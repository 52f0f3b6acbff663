"""Decoding state carried between forward calls: a key/value cache or a recurrent hidden state.

Without a cache, producing token n re-runs the model over all n previous tokens; with one,
each attention layer keeps the keys and values it already computed and the model only
processes the new token, turning O(n²) work per sequence into O(n).

`KVCache` preallocates one (R, Hkv, S_max, D) key and value buffer per layer — R rows, one per
sequence being decoded — and writes each new chunk in place, so decoding never reallocates or
concatenates (which would copy the whole cache every step). Row r, slot p holds the keys of
that sequence's token at position p. The buffers are allocated on the first write, with the
dtype and head count the keys actually arrive in (fp32, or bf16 under autocast; local heads
under TP), which makes one cache work for both Transformer styles. Llama's grouped-query
attention caches only the Hkv key/value heads — that is where its memory saving comes from.

A batched decoder runs the model on a few rows at a time: `cache.rows(first, count)` is a view
of rows first … first + count − 1 that the model takes as its `kv_cache`. With a (B,) tensor
`start_pos` each row is written at its own position (sequences of different lengths advance
together); the attention mask (model/layers.py) hides the slots past each row's position.

`RecurrentState` is the same idea for RNN/LSTM/GRU models: the hidden state, with one row per
sequence in the batch; `RecurrentState.rows(first, count)` is a view of some of them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class LayerKVCache:
    """One attention layer's keys and values: R rows × positions 0 … max_seq_len − 1."""

    def __init__(self, max_seq_len: int, n_rows: int | None = None):
        self.max_seq_len = max_seq_len
        self.n_rows = n_rows  # None: as many rows as the first write has
        self.k: torch.Tensor | None = None  # (R, Hkv, S_max, D)
        self.v: torch.Tensor | None = None

    def _ensure(self, k: torch.Tensor, rows_needed: int) -> None:
        fits = (self.k is not None and self.k.shape[0] >= rows_needed and self.k.shape[1] == k.shape[1]
                and self.k.shape[3] == k.shape[3] and self.k.dtype == k.dtype and self.k.device == k.device)
        if not fits:
            _, H, _, D = k.shape
            R = max(self.n_rows or 0, rows_needed)
            # Zeros, not empty: masked slots still enter the attention products (weight 0 × value),
            # and uninitialised memory can hold NaN, which 0 × NaN would spread.
            self.k = k.new_zeros(R, H, self.max_seq_len, D)
            self.v = k.new_zeros(R, H, self.max_seq_len, D)

    def update(self, k: torch.Tensor, v: torch.Tensor, start_pos: int | torch.Tensor,
               first_row: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, Hkv, T, D) keys/values of rows first_row … first_row + B − 1 at their
        positions; return those rows' (B, Hkv, S, D) keys/values for positions 0 … S − 1, where
        S is one past the furthest position written (the mask hides each row's slots beyond its own)."""
        B, _, T, _ = k.shape
        rows = slice(first_row, first_row + B)
        if isinstance(start_pos, torch.Tensor):
            end = int(start_pos.max()) + T
        else:
            end = start_pos + T
        if end > self.max_seq_len:
            raise ValueError(f"KV cache holds {self.max_seq_len} positions, asked to write up to {end}")
        self._ensure(k, first_row + B)
        if isinstance(start_pos, torch.Tensor):
            positions = start_pos[:, None] + torch.arange(T, device=k.device)  # (B, T)
            row_index = torch.arange(first_row, first_row + B, device=k.device)[:, None]  # (B, 1)
            # Advanced indices on dims 0 and 2 put (B, T) first: the target is (B, T, Hkv, D).
            self.k[row_index, :, positions] = k.transpose(1, 2)
            self.v[row_index, :, positions] = v.transpose(1, 2)
        else:
            self.k[rows, :, start_pos:end] = k
            self.v[rows, :, start_pos:end] = v
        # Views, not copies; stale entries past a row's position are never attended.
        return self.k[rows, :, :end], self.v[rows, :, :end]

    def move_row(self, src: int, dst: int) -> None:
        if self.k is not None:
            self.k[dst] = self.k[src]
            self.v[dst] = self.v[src]


class _LayerRows:
    """The model-facing `update` of one layer, restricted to rows first_row …"""

    def __init__(self, layer: LayerKVCache, first_row: int):
        self.layer, self.first_row = layer, first_row

    def update(self, k: torch.Tensor, v: torch.Tensor,
               start_pos: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layer.update(k, v, start_pos, self.first_row)


class KVCacheRows:
    """Rows first … first + count − 1 of a `KVCache`; pass as the model's `kv_cache`."""

    def __init__(self, cache: KVCache, first: int, count: int):
        self.layers = [_LayerRows(layer, first) for layer in cache.layers]
        self.count = count

    def layer(self, index: int) -> _LayerRows:
        return self.layers[index]


class KVCache:
    """Per-layer caches for a Transformer; pass as `model(tokens, kv_cache=cache, start_pos=p)`."""

    def __init__(self, n_layer: int, max_seq_len: int, n_rows: int | None = None):
        self.max_seq_len = max_seq_len
        self.layers = [LayerKVCache(max_seq_len, n_rows) for _ in range(n_layer)]

    def layer(self, index: int) -> LayerKVCache:
        return self.layers[index]

    def rows(self, first: int, count: int) -> KVCacheRows:
        return KVCacheRows(self, first, count)

    def move_row(self, src: int, dst: int) -> None:
        """Copy one sequence's keys/values to another row (compacting a batch)."""
        for layer in self.layers:
            layer.move_row(src, dst)

    def reset_row(self, row: int) -> None:
        """Nothing to clear: a new sequence overwrites slots from 0, and the mask hides the rest."""

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for c in self.layers for t in (c.k, c.v) if t is not None)


class RecurrentState:
    """The hidden state of an RNN/LSTM/GRU between calls, and how many tokens it has consumed.

    `hidden` is (L, B, C), or an (h, c) pair of them for an LSTM; None means zeros. As a batch
    store, `rows(first, count)` views some rows: a fresh view starts at position 0, reads those
    rows of `hidden` and writes the model's new state back into them.
    """

    def __init__(self, n_rows: int | None = None) -> None:
        self.hidden: Any = None
        self.position = 0
        self.n_rows = n_rows  # rows to allocate for a batch (None: as many as the first write has)

    def rows(self, first: int, count: int) -> _RecurrentRows:
        return _RecurrentRows(self, first, count)

    def move_row(self, src: int, dst: int) -> None:
        for part in _parts(self.hidden):
            part[:, dst] = part[:, src]

    def reset_row(self, row: int) -> None:
        """Zeros for a sequence that starts in `row`."""
        for part in _parts(self.hidden):
            part[:, row] = 0


class _RecurrentRows:
    """Rows first … first + count − 1 of a `RecurrentState`, as a state the model can continue."""

    def __init__(self, store: RecurrentState, first: int, count: int):
        self.store, self.rows_ = store, slice(first, first + count)
        self.position = 0  # the engine tracks real positions; a recurrent model needs none

    @property
    def hidden(self) -> Any:
        if self.store.hidden is None:
            return None  # zeros
        parts = tuple(part[:, self.rows_].contiguous() for part in _parts(self.store.hidden))
        return parts if isinstance(self.store.hidden, tuple) else parts[0]

    @hidden.setter
    def hidden(self, value: Any) -> None:
        if self.store.hidden is None:  # first write: allocate every row, zeros for the others
            R = max(self.rows_.stop, self.store.n_rows or 0)
            zeros = tuple(part.new_zeros(part.shape[0], R, part.shape[2]) for part in _parts(value))
            self.store.hidden = zeros if isinstance(value, tuple) else zeros[0]
        for part, new in zip(_parts(self.store.hidden), _parts(value)):
            part[:, self.rows_] = new


def _parts(hidden: Any) -> tuple[torch.Tensor, ...]:
    if hidden is None:
        return ()
    return hidden if isinstance(hidden, tuple) else (hidden,)


def new_cache(model: nn.Module, max_seq_len: int | None = None,
              n_rows: int | None = None) -> KVCache | RecurrentState:
    """The decoding state that fits `model` (a Transformer or a recurrent model), for `n_rows` sequences."""
    cfg = model.config
    if cfg.is_transformer:
        return KVCache(cfg.n_layer, max_seq_len or cfg.max_seq_len, n_rows)
    return RecurrentState(n_rows)
