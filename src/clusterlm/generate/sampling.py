"""Choosing the next token from logits: greedy, temperature, top-k and nucleus (top-p).

All randomness comes from an explicit `torch.Generator`, so a seed reproduces a sample
exactly and sampling never disturbs the global RNG (e.g. of a training run that samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clusterlm.errors import UsageError


# A nonzero temperature below this is greedy decoding in all but name, and far below it the
# scaled logits overflow fp32 (1e-45 turns every logit into ±inf and sampling into NaN).
MIN_TEMPERATURE = 1e-5
MAX_TEMPERATURE = 100.0  # far past uniform sampling already


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0  # 0 = greedy (argmax)
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set whose probability reaches p

    def __post_init__(self) -> None:
        t = self.temperature
        if not (t == 0.0 or MIN_TEMPERATURE <= t <= MAX_TEMPERATURE):  # NaN fails every comparison
            raise UsageError(f"temperature must be 0 (greedy) or in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}], got {t}")
        if self.top_k is not None and self.top_k < 1:
            raise UsageError(f"top-k must be ≥ 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise UsageError(f"top-p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set logits outside the top-k / top-p set to −inf; logits are (B, V), already temperature-scaled."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens strictly before it already reach top_p; the most
        # likely token always survives.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, settings: SamplingSettings,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V)."""
    if settings.temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / settings.temperature, settings.top_k, settings.top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
