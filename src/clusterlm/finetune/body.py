"""The language model as a feature extractor: final hidden states, padding and pooling.

Classification and SFT's fused loss need the last layer's hidden states (B, T, C), not the
next-token logits (B, T, V): for a small model the vocabulary projection is most of the
forward FLOPs. `hidden_states` runs the model's own forward with its output projection
swapped for an identity for the duration of the call, so every architecture (GPT-2, Llama,
RNN/LSTM/GRU) works without a second copy of its forward pass, and the model's modules
and state dict are unchanged afterwards (a tied head stays tied to the embedding).

Batches are right-padded: with causal attention (and left-to-right recurrence) a position
never sees the padding after it, so the states of real tokens equal those of the unpadded
sequence.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn

from clusterlm.data.tokenizer import EOS_TOKEN, PAD_TOKEN

Pooling = Literal["last", "mean"]
POOLINGS = ("last", "mean")


@contextmanager
def _without_vocabulary_head(lm: nn.Module) -> Iterator[None]:
    head = lm.output
    lm.output = nn.Identity()
    try:
        yield
    finally:
        lm.output = head


def hidden_states(lm: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Final (normalised) hidden states (B, T, C) of `lm` for tokens (B, T)."""
    with _without_vocabulary_head(lm):
        return lm(tokens)


def pad_id_of(tokenizer: Any) -> int:
    """The id right-padding uses: `<|pad|>`, else end-of-text, else 0 (padding is never attended
    to by real tokens nor scored, so any id works; a real pad token keeps logs readable)."""
    for token in (PAD_TOKEN, EOS_TOKEN):
        found = tokenizer.token_to_id(token)
        if found is not None:
            return found
    return 0


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded tokens (B, T) and lengths (B,) of non-empty sequences."""
    T = max(len(s) for s in sequences)
    tokens = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    for i, s in enumerate(sequences):
        tokens[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    return tokens.to(device), lengths.to(device)


def pool(hidden: torch.Tensor, lengths: torch.Tensor, mode: Pooling) -> torch.Tensor:
    """One vector per sequence (B, C): the last real token's state, or the mean over real tokens.

    Last-token pooling is the natural summary for a causal model (the only position that has
    read the whole text); mean pooling averages every position and is less sensitive to how
    the text happens to end.
    """
    B, T, _ = hidden.shape
    if mode == "last":
        return hidden[torch.arange(B, device=hidden.device), lengths - 1]  # (B, C)
    if mode == "mean":
        real = torch.arange(T, device=hidden.device)[None, :] < lengths[:, None]  # (B, T)
        summed = (hidden * real[..., None].to(hidden.dtype)).sum(dim=1)  # (B, C)
        return summed / lengths[:, None].to(hidden.dtype)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")
