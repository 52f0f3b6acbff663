"""Decoder-only Transformer language model in two styles, chosen by `ModelConfig.style`.

gpt2:  learned position table, LayerNorm, GELU MLP, biases (Radford et al. 2019)
llama: rotary positions, RMSNorm, SwiGLU, grouped-query attention, no biases (Touvron et al. 2023)

    tokens (B, T) → tok_embeddings (+ pos_embeddings) → layers["0".."L-1"] → norm → output → logits (B, T, V)

The module is plain single-device PyTorch. To build a huge model without allocating it,
construct it on the meta device, shard it, `to_empty(device=...)`, then `init_weights(seed)`
(torchtitan's pattern); `init_weights` is the only place initial values come from.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clusterlm.config.model import ModelConfig
from clusterlm.model.loss import linear_cross_entropy
from clusterlm.model.init import Init, init_parameters_
from clusterlm.model.layers import Block, make_norm, residual_init_std, rope_tables


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not cfg.is_transformer:
            raise ValueError(f"Transformer needs style gpt2 or llama, got {cfg.style}")
        self.config = cfg
        V, d = cfg.require_vocab(), cfg.d_model
        self.tok_embeddings = nn.Embedding(V, d)
        self.pos_embeddings = nn.Embedding(cfg.max_seq_len, d) if cfg.style == "gpt2" else None
        self.dropout = nn.Dropout(cfg.dropout)
        # A ModuleDict keyed "0".."L-1" (not a ModuleList) keeps state-dict keys stable when a
        # pipeline stage deletes the layers it does not own (torchtitan's convention).
        self.layers = nn.ModuleDict({str(i): Block(cfg) for i in range(cfg.n_layer)})
        self.norm = make_norm(cfg)
        self.output = nn.Linear(d, V, bias=False)
        self.tie_weights()
        # RoPE tables are derived data, not weights: non-persistent buffers stay out of
        # checkpoints and are recomputed by init_weights after a meta-device build.
        if cfg.style == "llama":
            cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.rope_cos = self.rope_sin = None

    def tie_weights(self) -> None:
        """Share the output head with the token embedding (one V×d matrix, counted once)."""
        if self.config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight

    def to_empty(self, *, device: torch.device | str | None, recurse: bool = True) -> Transformer:
        # Moving off the meta device makes a new Parameter per module, which would silently
        # untie the head from the embedding; re-tie so the two stay one tensor.
        super().to_empty(device=device, recurse=recurse)
        self.tie_weights()
        return self

    def param_init(self, name: str) -> Init:
        """How parameter `name` starts: N(0, init_std) for embeddings and projections, except
        the projections that write into the residual stream (wo, w2): std/√(2L), because each of
        the 2L of them adds to the same stream, which keeps its variance from growing with depth
        (GPT-2 paper §2.3, nanoGPT). Norm gains 1, biases 0."""
        cfg = self.config
        last, kind = name.split(".")[-2:] if "." in name else ("", name)
        if kind == "bias":
            return Init("constant", 0.0)
        if last in ("attention_norm", "ffn_norm", "norm"):
            return Init("constant", 1.0)
        if last in ("wo", "w2"):
            return Init("normal", residual_init_std(cfg.init_std, cfg.n_layer))
        return Init("normal", cfg.init_std)

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """Seeded initialisation of whatever part of the model this process holds (whole, sharded or a
        pipeline stage): the same seed gives the same weights in every layout (`model/init.py`)."""
        init_parameters_(self, seed, self.param_init)
        self.init_buffers()

    @torch.no_grad()
    def init_buffers(self) -> None:
        """Recompute derived buffers (RoPE tables) — needed after `to_empty`, before loading weights."""
        if self.rope_cos is not None:
            cfg = self.config
            cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta, device=self.rope_cos.device)
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)


    def forward(self, tokens: torch.Tensor, kv_cache: Any = None, start_pos: int | torch.Tensor = 0,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for tokens (B, T) at positions start_pos … start_pos + T − 1.

        `start_pos` is an int, or a (B,) tensor of per-row starts: batched decoding advances
        sequences of different lengths together, each at its own position (see
        `clusterlm.generate.engine`). With `kv_cache` (see `clusterlm.generate.kv_cache.KVCache`)
        each attention layer writes this chunk's keys/values at those positions and attends over
        everything cached so far. With `targets` (B, T) it returns the mean cross-entropy instead
        of the logits, computed by `model/loss.py` without materialising them (same value as
        `F.cross_entropy(logits.flatten(0, 1), targets.flatten())`; not for a TP-sharded head).
        """
        B, T = tokens.shape[:2]
        if isinstance(start_pos, torch.Tensor):
            positions = start_pos[:, None] + torch.arange(T, device=tokens.device)  # (B, T)
            end = int(start_pos.max()) + T
        else:
            end = start_pos + T
            positions = torch.arange(start_pos, end, device=tokens.device)  # (T,)
        if end > self.config.max_seq_len:
            raise ValueError(
                f"positions up to {end} exceed the model's context of {self.config.max_seq_len} tokens"
            )
        # A pipeline stage (distributed/pipeline.py) keeps only its layers: without the embedding it
        # receives the previous stage's hidden states (B, T, C), without the head it returns them.
        if self.tok_embeddings is not None:
            x = self.tok_embeddings(tokens)  # (B, T, C)
            if self.pos_embeddings is not None:
                x = x + self.pos_embeddings(positions)  # (T, C) broadcast over B, or (B, T, C)
            x = self.dropout(x)
        else:
            x = tokens
        rope = None
        if self.rope_cos is not None:
            index = positions if isinstance(start_pos, torch.Tensor) else slice(start_pos, end)
            rope = (self.rope_cos[index], self.rope_sin[index])  # (T, D) or (B, T, D) each
        for i, block in self.layers.items():
            cache = kv_cache.layer(int(i)) if kv_cache is not None else None
            x = block(x, rope, cache, start_pos)
        if self.output is None:
            return x
        x = self.norm(x)  # (B, T, C)
        if targets is not None:
            return linear_cross_entropy(x.flatten(0, 1), self.output.weight, targets.flatten())
        return self.output(x)  # (B, T, V)
