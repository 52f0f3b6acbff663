"""LoRA (Hu et al. 2021): train a low-rank update B·A beside each frozen weight, merge it on export.

    y = x Wᵀ + (α / r) · dropout(x) Aᵀ Bᵀ        W (out, in) frozen; A (r, in), B (out, r) trained

B starts at zero, so the adapted model starts exactly equal to the pretrained one. After
training, `merge_lora` folds the update into the weight, W ← W + (α / r) · B A, and puts
the plain `nn.Linear` back: the saved checkpoint is an ordinary model of the original shape,
so `eval`, `generate`, `serve` and `export` need to know nothing about LoRA, and inference
costs nothing extra.

A small module of our own rather than `peft`: peft's model wrapper (`get_peft_model`) is
built around `transformers` models (their config objects, `save_pretrained` adapter files),
so using it on our plain `nn.Module`s would add transformers and accelerate as dependencies
of fine-tuning for about sixty lines of arithmetic, and we would still write the merge into
our own checkpoint format. The method is the same (same init, same scaling α/r).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from clusterlm.errors import UsageError

# Every linear layer inside the Transformer blocks: attention (wq, wk, wv, wo) and the
# feed-forward (w1, w2, and SwiGLU's w3). Adapting all of them, not only wq/wv, is what
# QLoRA (Dettmers et al. 2023) found necessary to match full fine-tuning.
DEFAULT_TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable rank-r update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **kw))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, **kw))
        # A as nn.Linear initialises its weight (Kaiming-uniform); B = 0 makes the update start at 0.
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.dropout(x) @ self.lora_a.t() @ self.lora_b.t()  # (…, in) → (…, r) → (…, out)
        return self.base(x) + self.scale * update

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The base layer with the update folded into its weight (the base is modified in place)."""
        self.base.weight += self.scale * (self.lora_b @ self.lora_a)  # (out, r) @ (r, in)
        for p in self.base.parameters():
            p.requires_grad_(True)
        return self.base


def apply_lora(model: nn.Module, rank: int, alpha: float, dropout: float = 0.0,
               targets: tuple[str, ...] = DEFAULT_TARGETS) -> int:
    """Freeze `model` and wrap each targeted linear layer of its blocks; returns how many were wrapped."""
    if rank < 1:
        raise UsageError(f"--lora-rank must be ≥ 1, got {rank}")
    for p in model.parameters():
        p.requires_grad_(False)
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and name.startswith("layers.") and name.rsplit(".", 1)[-1] in targets]
    if not names:
        raise UsageError("LoRA needs a Transformer (style gpt2 or llama) with linear layers named "
                         f"{', '.join(targets)}; use --method full for this model")
    for name in names:
        parent_name, child = name.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))
    return len(names)


def merge_lora(model: nn.Module) -> int:
    """Replace every `LoRALinear` in `model` by its merged `nn.Linear`; returns how many were merged."""
    names = [name for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, getattr(parent, child).merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return len(names)
