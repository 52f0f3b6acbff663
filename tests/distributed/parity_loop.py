"""A small training loop shared by the parity workers and the single-process reference.

Model-only (no dataset, no trainer): fixed random token batches, AdamW, gradient clipping.
The global batch of step i is the same tensor everywhere; data-parallel rank r of D takes
rows [r·B/D, (r+1)·B/D) and splits them into `grad_accum` micro-batches, so the parallel run
and the one-process run optimise exactly the same objective.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F

from clusterlm.config.train import TrainConfig
from clusterlm.config.model import ModelConfig

MODELS = {
    # vocab 97: not divisible by tp, so the vocabulary-sharded embedding/head is uneven.
    "gpt2": dict(style="gpt2", n_layer=2, n_head=4, d_model=32, vocab_size=97, max_seq_len=32),
    "llama": dict(style="llama", n_layer=2, n_head=4, n_kv_head=2, d_model=32, vocab_size=97, max_seq_len=32,
                  tie_embeddings=False),
}
SEQ_LEN = 16


def model_config(name: str) -> ModelConfig:
    return ModelConfig(**MODELS[name])


def train_config(**overrides: Any) -> TrainConfig:
    base = dict(lr=3e-3, warmup_steps=0, max_steps=100, weight_decay=0.1, grad_clip=1.0, precision="fp32",
                seq_len=SEQ_LEN, micro_batch=4, seed=7)
    return TrainConfig(**{**base, **overrides})


def batches(steps: int, global_batch: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (steps, global_batch, SEQ_LEN + 1), generator=g)


def build(cfg: ModelConfig, seed: int = 7) -> torch.nn.Module:
    from clusterlm.model.build import build_model

    model = build_model(cfg)
    model.init_weights(seed)
    return model


def run_steps(model: torch.nn.Module, train_module: torch.nn.Module, tcfg: TrainConfig, data: torch.Tensor, *,
              dp_rank: int = 0, dp_size: int = 1, grad_accum: int = 1, micro_step: Any = None,
              reduce_mean: Any = float, clip: Any = None) -> list[float]:
    """Train for len(data) steps; returns the global mean loss of each step."""
    from clusterlm.train.optim import build_optimizer

    optimizer = build_optimizer(model, tcfg)
    clip = clip or torch.nn.utils.clip_grad_norm_
    losses = []
    for step_batch in data:
        rows = step_batch.shape[0] // dp_size
        local = step_batch[dp_rank * rows : (dp_rank + 1) * rows]
        loss_sum = 0.0
        for i, chunk in enumerate(local.chunk(grad_accum)):
            x, y = chunk[:, :-1], chunk[:, 1:]
            ctx = micro_step(i == grad_accum - 1) if micro_step is not None else contextlib.nullcontext()
            with ctx:
                logits = train_module(x)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
                (loss / grad_accum).backward()
            loss_sum += float(loss.detach())
        clip(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(reduce_mean(loss_sum / grad_accum))
    return losses
