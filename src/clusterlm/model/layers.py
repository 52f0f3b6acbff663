"""Transformer building blocks: norms, rotary positions, attention, feed-forward, block.

Single-device PyTorch only (torchtitan's rule): tensor parallelism shards `wq`/`wk`/`wv`
column-wise and `wo`/`w2` row-wise from outside (`distributed/parallelize.py`), so nothing
here may assume the global head count. Attention views its projections with `-1` heads
and derives the grouped-query ratio from the local tensor shapes.

Shapes: B batch, T new tokens, S attended positions (T, or cache length), C model width,
H query heads, Hkv key/value heads, D head dim, F feed-forward width.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clusterlm.config.model import ModelConfig


def make_norm(cfg: ModelConfig) -> nn.Module:
    """GPT-2 uses LayerNorm (with a bias when the model has biases); Llama uses RMSNorm."""
    if cfg.style == "llama":
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.use_bias)


def rope_tables(head_dim: int, max_seq_len: int, theta: float,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape (max_seq_len, D) for rotary position embeddings.

    Half-split convention (GPT-NeoX / HF Llama): dimension i pairs with i + D/2, so HF
    Llama weights load without the interleave permutation Meta's original code needs.
    Computed in fp32: positions up to 8k times frequencies lose precision in bf16.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    positions = torch.arange(max_seq_len, device=device, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)  # (S, D/2)
    angles = torch.cat((angles, angles), dim=-1)  # (S, D)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, T, H, D) by per-position angles; cos/sin are (T, D), or (B, T, D) per row."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # rotate_half
    if cos.dim() == 2:  # the same positions for every row
        cos, sin = cos[None], sin[None]
    cos = cos[:, :, None, :].to(x.dtype)  # (1 or B, T, 1, D)
    sin = sin[:, :, None, :].to(x.dtype)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Multi-head causal self-attention with optional grouped-query key/value heads."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, hd, bias = cfg.d_model, cfg.head_dim, cfg.use_bias
        self.head_dim = hd
        self.dropout_p = cfg.dropout
        self.wq = nn.Linear(d, cfg.n_head * hd, bias=bias)
        self.wk = nn.Linear(d, cfg.kv_heads * hd, bias=bias)
        self.wv = nn.Linear(d, cfg.kv_heads * hd, bias=bias)
        self.wo = nn.Linear(cfg.n_head * hd, d, bias=bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache: Any = None, start_pos: int | torch.Tensor = 0) -> torch.Tensor:
        """`start_pos` is where this chunk starts: one int for every row, or a (B,) tensor when
        rows are at different positions (batched decoding of sequences of different lengths)."""
        B, T, _ = x.shape
        # -1 heads: after tensor parallelism each rank holds n_head / tp of them.
        q = self.wq(x).view(B, T, -1, self.head_dim)  # (B, T, H, D)
        k = self.wk(x).view(B, T, -1, self.head_dim)  # (B, T, Hkv, D)
        v = self.wv(x).view(B, T, -1, self.head_dim)  # (B, T, Hkv, D)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, D)
        if cache is not None:
            k, v = cache.update(k, v, start_pos)  # (B, Hkv, S, D) with S = start_pos + T
        S = k.shape[2]
        # is_causal aligns the mask to the top-left corner, which is right only when queries
        # and keys start together (training, prefill). A single new token sees everything
        # cached; a chunk appended to a cache needs the bottom-right-aligned mask spelled out.
        mask, causal = None, False
        if isinstance(start_pos, torch.Tensor):
            # Row b's query t is at position start_pos[b] + t and sees keys 0 … that position;
            # slots past it belong to longer rows of the batch (or are stale) and are masked.
            q_pos = start_pos[:, None] + torch.arange(T, device=x.device)  # (B, T)
            mask = (torch.arange(S, device=x.device) <= q_pos[..., None])[:, None]  # (B, 1, T, S)
        elif T == S:
            causal = True
        elif T > 1:
            q_pos = torch.arange(S - T, S, device=x.device)[:, None]
            mask = torch.arange(S, device=x.device)[None, :] <= q_pos  # (T, S) True = attend
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal,
            dropout_p=self.dropout_p if self.training else 0.0,
            enable_gqa=q.shape[1] != k.shape[1],
        )  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, -1)  # (B, T, H·D) — re-assemble heads
        return self.resid_dropout(self.wo(y))


class MLP(nn.Module):
    """GPT-2 feed-forward: fc (w1) → GELU (tanh approximation, as GPT-2 was trained) → proj (w2)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=cfg.use_bias)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=cfg.use_bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused GELU kernel instead of the seven elementwise ops of the written-out formula.
        return self.dropout(self.w2(F.gelu(self.w1(x), approximate="tanh")))  # (B, T, C)


class SwiGLU(nn.Module):
    """Llama feed-forward: down(silu(gate(x)) · up(x)) — w1 gate, w3 up, w2 down."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=cfg.use_bias)
        self.w3 = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=cfg.use_bias)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=cfg.use_bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))  # (B, T, F) → (B, T, C)


class Block(nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then h + feed_forward(norm(h))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = make_norm(cfg)
        self.attention = Attention(cfg)
        self.ffn_norm = make_norm(cfg)
        self.feed_forward = SwiGLU(cfg) if cfg.style == "llama" else MLP(cfg)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache: Any = None, start_pos: int | torch.Tensor = 0) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), rope, cache, start_pos)  # (B, T, C)
        return h + self.feed_forward(self.ffn_norm(h))


def residual_init_std(std: float, n_layer: int) -> float:
    return std / math.sqrt(2 * n_layer)
