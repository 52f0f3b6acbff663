"""Language-model metrics from logits: loss, perplexity, bits per token/byte, top-k accuracy.

All of them come from the same sums over predicted tokens, so they are exact
over any number of batches (and over ranks, by summing the sums):

    loss        = Σ −log p(target) / N                 (nats per token)
    perplexity  = exp(loss)
    bits/token  = loss / ln 2
    bits/byte   = bits/token · tokens/bytes            (tokenizer-independent, comparable
                                                        with gzip/xz and other vocabularies)
    top-k acc   = fraction of positions whose target is among the k highest logits
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


IGNORE_INDEX = -100  # F.cross_entropy's default: positions that are not scored


@dataclass
class TokenStats:
    nll_sum: float = 0.0  # Σ −log p(target), nats
    tokens: int = 0
    top1: int = 0
    top5: int = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: logits (B, T, V), targets (B, T); targets of −100 (padding) are skipped."""
        flat = logits.flatten(0, 1).float()  # (B·T, V)
        tgt = targets.flatten()  # (B·T,)
        scored = tgt != IGNORE_INDEX
        self.nll_sum += float(F.cross_entropy(flat, tgt, reduction="sum", ignore_index=IGNORE_INDEX))
        self.tokens += int(scored.sum())
        k = min(5, flat.size(-1))
        topk = flat.topk(k, dim=-1).indices  # (B·T, k)
        hits = (topk == tgt.unsqueeze(-1)) & scored.unsqueeze(-1)
        self.top1 += int(hits[:, 0].sum())
        self.top5 += int(hits.any(dim=-1).sum())

    def merge(self, other: TokenStats) -> TokenStats:
        return TokenStats(self.nll_sum + other.nll_sum, self.tokens + other.tokens,
                          self.top1 + other.top1, self.top5 + other.top5)

    @property
    def loss(self) -> float:
        return self.nll_sum / self.tokens if self.tokens else float("nan")

    def summary(self, bytes_per_token: float | None = None) -> dict[str, float | int | None]:
        loss = self.loss
        bits_per_token = loss / math.log(2)
        return {
            "loss": loss,
            "perplexity": math.exp(loss) if loss < 700 else float("inf"),
            "bits_per_token": bits_per_token,
            "bits_per_byte": bits_per_token / bytes_per_token if bytes_per_token else None,
            "top1_accuracy": self.top1 / self.tokens if self.tokens else float("nan"),
            "top5_accuracy": self.top5 / self.tokens if self.tokens else float("nan"),
            "tokens": self.tokens,
        }

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def generalization_gap(val_loss: float | None, train_loss: float | None) -> float | None:
    """val − train loss: near 0 while the model generalises, growing as it memorises."""
    if val_loss is None or train_loss is None:
        return None
    return val_loss - train_loss
