"""Data augmentation for language-model batches — a remedy for overfitting small corpora.

- `span_mask`: replace random spans of *input* tokens with the pad token while keeping
  the targets, so the model must predict through gaps instead of copying memorised
  context (a denoising signal in the spirit of span corruption, T5 / Raffel et al. 2020).
- `doc_shuffle`: permute the documents inside each window (split at EOS), so the same
  text appears in new contexts and in new positions.

Both draw from a generator seeded by (seed, step, micro-batch), not the global RNG,
so a resumed run augments exactly like an uninterrupted one.
"""

from __future__ import annotations

import torch

SPAN_LEN = 3  # tokens per masked span


def augment_generator(seed: int, step: int, micro: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1_009 + micro) % 2**64)  # torch takes 64 bits


def span_mask(x: torch.Tensor, rate: float, pad_id: int, generator: torch.Generator) -> torch.Tensor:
    """x (B, T) → copy with ≈ rate·T input positions per row replaced by `pad_id`."""
    B, T = x.shape
    n_spans = int(round(rate * T / SPAN_LEN))
    if n_spans == 0:
        return x
    starts = torch.randint(0, max(1, T - SPAN_LEN + 1), (B, n_spans), generator=generator)  # (B, S)
    pos = torch.arange(T)  # (T,)
    # position t is masked if start ≤ t < start + SPAN_LEN for any span of its row
    covered = (pos[None, None, :] >= starts[..., None]) & (pos[None, None, :] < starts[..., None] + SPAN_LEN)
    mask = covered.any(dim=1).to(x.device)  # (B, T)
    return x.masked_fill(mask, pad_id)


def doc_shuffle(x: torch.Tensor, y: torch.Tensor, eos_id: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Permute the EOS-terminated documents of each window; returns new (x, y)."""
    window = torch.cat([x, y[:, -1:]], dim=1).cpu()  # (B, T+1): y is x shifted by one
    out = torch.empty_like(window)
    for b in range(window.size(0)):
        row = window[b]
        ends = (row == eos_id).nonzero().flatten().tolist()
        cuts = [0] + [e + 1 for e in ends if e + 1 < row.numel()] + [row.numel()]
        pieces = [row[s:e] for s, e in zip(cuts[:-1], cuts[1:]) if e > s]
        order = torch.randperm(len(pieces), generator=generator).tolist()
        out[b] = torch.cat([pieces[i] for i in order])
    out = out.to(x.device)
    return out[:, :-1].contiguous(), out[:, 1:].contiguous()


def augment_batch(kind: str, x: torch.Tensor, y: torch.Tensor, *, rate: float, eos_id: int, pad_id: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if kind == "none":
        return x, y
    if kind == "span_mask":
        return span_mask(x, rate, pad_id, generator), y
    if kind == "doc_shuffle":
        return doc_shuffle(x, y, eos_id, generator)
    raise ValueError(f"unknown augmentation {kind!r}")
