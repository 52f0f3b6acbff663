"""Parameter counts and FLOPs per token, computed from a `ModelConfig` alone.

One definition shared by training (MFU in the logs) and the cluster planner, so a
plan and a measurement never disagree about what a "FLOP" is. Counts here must
equal `sum(p.numel())` of the model `model/` builds; a test checks every preset.

Conventions (PaLM, Chowdhery et al. 2022, appendix B):
  model FLOPs per token (training) = 6·N_matmul + 12·L·d·s
where N_matmul counts weights that take part in a matrix multiply (the token
embedding lookup is free, but a tied output head is a matmul over the same
weights, so it counts once), and 12·L·d·s is attention's QKᵀ and AV over a
context of s tokens. A forward pass is one third of that. Activation
recomputation adds FLOPs the hardware executes but does not change model FLOPs,
so MFU ignores it (Korthikanti et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterlm.config.model import ModelConfig


@dataclass(frozen=True)
class ParamBreakdown:
    embedding: int  # token embedding table (V·d)
    position: int  # learned position table (GPT-2 only)
    blocks: int  # all transformer / recurrent layers
    final_norm: int
    head: int  # output projection, 0 when tied to the embedding
    block_matmul: int  # weights inside the blocks that are matmul operands

    @property
    def total(self) -> int:
        return self.embedding + self.position + self.blocks + self.final_norm + self.head

    @property
    def non_embedding(self) -> int:
        """Parameters excluding embedding and position tables (Kaplan et al. 2020's N)."""
        return self.blocks + self.final_norm + self.head


def param_breakdown(cfg: ModelConfig) -> ParamBreakdown:
    V = cfg.require_vocab()
    d = cfg.d_model
    if not cfg.is_transformer:
        return _recurrent_breakdown(cfg, V)
    bias = cfg.use_bias
    kv_dim = cfg.kv_heads * cfg.head_dim
    ff = cfg.ffn_dim
    attn_w = d * d + 2 * d * kv_dim + d * d  # q, k, v, out
    if cfg.style == "gpt2":
        mlp_w = 2 * d * ff  # fc, proj
        norm = 2 * d if bias else d  # LayerNorm weight (+ bias)
        block_bias = (d + 2 * kv_dim + d + ff + d) if bias else 0
        position = cfg.max_seq_len * d
    else:  # llama: SwiGLU has three matrices, RMSNorm has a weight only
        mlp_w = 3 * d * ff
        norm = d
        block_bias = (d + 2 * kv_dim + d + 2 * ff + d) if bias else 0
        position = 0
    per_layer = attn_w + mlp_w + 2 * norm + block_bias
    return ParamBreakdown(
        embedding=V * d,
        position=position,
        blocks=cfg.n_layer * per_layer,
        final_norm=norm,
        head=0 if cfg.tie_embeddings else V * d,
        block_matmul=cfg.n_layer * (attn_w + mlp_w),
    )


def _recurrent_breakdown(cfg: ModelConfig, V: int) -> ParamBreakdown:
    # torch.nn.RNN/LSTM/GRU: per layer gates·(in·H + H·H + 2H) with input size = H here
    # (embedding width equals hidden width), gates = 1 / 4 / 3.
    d = cfg.d_model
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cfg.style]
    per_layer_w = gates * (d * d + d * d)
    per_layer = per_layer_w + gates * 2 * d
    return ParamBreakdown(
        embedding=V * d,
        position=0,
        blocks=cfg.n_layer * per_layer,
        final_norm=0,
        head=0 if cfg.tie_embeddings else V * d,
        block_matmul=cfg.n_layer * per_layer_w,
    )


def param_count(cfg: ModelConfig) -> int:
    """Total trainable parameters (tied weights counted once)."""
    return param_breakdown(cfg).total


def matmul_param_count(cfg: ModelConfig) -> int:
    """Weights used as matmul operands per token: block matrices plus the output head."""
    b = param_breakdown(cfg)
    return b.block_matmul + cfg.require_vocab() * cfg.d_model


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None, training: bool = True) -> float:
    """Model FLOPs per token: 6·N_matmul + 12·L·d·s for training, a third of it for a forward."""
    s = seq_len if seq_len is not None else cfg.max_seq_len
    dense = 2 * matmul_param_count(cfg)
    attention = 4 * cfg.n_layer * cfg.d_model * s if cfg.is_transformer else 0
    forward = dense + attention
    return 3.0 * forward if training else float(forward)


def mfu(tokens_per_s: float, cfg: ModelConfig, seq_len: int, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s ÷ the device's peak FLOP/s."""
    if peak_flops <= 0:
        raise ValueError("peak_flops must be positive")
    return tokens_per_s * flops_per_token(cfg, seq_len) / peak_flops


def recompute_flops_per_token(cfg: ModelConfig, seq_len: int | None = None, mode: str = "none") -> float:
    """Extra FLOPs per token that activation recomputation executes (hardware, not model, FLOPs).

    "full" re-runs every block's forward (dense matmuls and attention); "selective" re-runs
    only attention's QKᵀ/softmax/AV (Korthikanti et al. 2022). With full recompute,
    `flops_per_token + recompute_flops_per_token` equals Megatron's
    96·B·s·L·h²·(1 + s/(6h) + V/(16·L·h)) per token (Narayanan et al. 2021, eq. 3).
    """
    if mode == "none" or not cfg.is_transformer:
        return 0.0
    s = seq_len if seq_len is not None else cfg.max_seq_len
    attention = 4.0 * cfg.n_layer * cfg.d_model * s
    if mode == "selective":
        return attention
    if mode == "full":
        return 2.0 * param_breakdown(cfg).block_matmul + attention
    raise ValueError(f"unknown recompute mode {mode!r} (none | selective | full)")
