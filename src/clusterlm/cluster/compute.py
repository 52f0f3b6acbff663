"""Compute-time model of one accelerator: GEMMs, memory-bound kernels, one transformer layer.

Every kernel is timed with a roofline plus a fixed per-kernel cost:

    t = max(FLOPs / (peak · η_gemm(FLOPs)),  bytes / (HBM bandwidth · η_mem))  +  t_kernel

η_gemm is the accelerator's sustained large-GEMM efficiency (catalog), or, for a probed CPU, an
interpolation in a measured table of GEMM size → efficiency. Small GEMMs lose efficiency
through the two other terms: the memory roofline (attention's batched GEMMs with K = head_dim
are bandwidth-bound on an A100) and the fixed kernel cost (launch + tail). Element-wise work
(norms, softmax, GeLU/SwiGLU, dropout, residual adds, cross-entropy) is bandwidth-bound: the
bytes each kernel reads and writes, counted per kernel as fused in Megatron-LM / PyTorch.

All quantities are per micro-batch on one device, after tensor (t) and sequence parallel split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clusterlm.cluster.catalog import Accelerator
from clusterlm.config.model import ModelConfig

# FlashAttention backward relative to its forward (Dao 2023: the backward kernel reaches ≈ 80–85 %
# of the forward's FLOP rate). Causal kernels skip the upper triangle (half the work).
FLASH_BWD_REL = 0.85


@dataclass(frozen=True)
class Device:
    """One accelerator in one precision: the numbers the kernel timing needs."""

    peak_flops: float
    mem_bytes_per_s: float  # effective (bandwidth × memory efficiency)
    gemm_efficiency: float
    kernel_s: float
    gemm_table: tuple[tuple[float, float], ...] = ()
    attention_efficiency: float | None = None

    @classmethod
    def of(cls, acc: Accelerator, dtype: str) -> Device:
        return cls(
            peak_flops=acc.peak_flops(dtype),
            mem_bytes_per_s=acc.memory_bandwidth_gb_s * 1e9 * acc.memory_efficiency,
            gemm_efficiency=acc.gemm_efficiency,
            kernel_s=acc.kernel_overhead_us * 1e-6,
            gemm_table=acc.gemm_table,
            attention_efficiency=acc.attention_efficiency,
        )


def gemm_efficiency(dev: Device, flops: float) -> float:
    """Sustained fraction of peak for a GEMM of `flops` (table interpolation in log-size if measured)."""
    table = dev.gemm_table
    if not table:
        return dev.gemm_efficiency
    gflop = flops / 1e9
    if gflop <= table[0][0]:
        return table[0][1]
    if gflop >= table[-1][0]:
        return table[-1][1]
    for (g0, e0), (g1, e1) in zip(table, table[1:]):
        if g0 <= gflop <= g1:
            w = (math.log(gflop) - math.log(g0)) / (math.log(g1) - math.log(g0))
            return e0 + w * (e1 - e0)
    return table[-1][1]  # unreachable: the table is sorted


def gemm_time(dev: Device, m: float, k: float, n: float, elem_bytes: float, batch: float = 1) -> float:
    """(batch ×) [m×k]·[k×n]: roofline of compute and operand traffic, plus the kernel cost."""
    flops = 2.0 * m * k * n * batch
    traffic = elem_bytes * (m * k + k * n + m * n) * batch
    compute = flops / (dev.peak_flops * gemm_efficiency(dev, flops))
    return max(compute, traffic / dev.mem_bytes_per_s) + dev.kernel_s


def mem_time(dev: Device, nbytes: float) -> float:
    """A bandwidth-bound kernel moving `nbytes` (reads + writes)."""
    return nbytes / dev.mem_bytes_per_s + dev.kernel_s


@dataclass(frozen=True)
class LayerShape:
    """A transformer layer's dimensions as one device sees them (per micro-batch)."""

    b: int  # micro-batch (sequences)
    s: int  # sequence length
    h: int  # d_model
    heads: int
    kv_heads: int
    head_dim: int
    ff: int
    gated: bool  # SwiGLU (three FFN matrices) vs GeLU MLP (two)
    dropout: bool  # Megatron-style dropout masks (hidden and attention)
    rope: bool
    t: int  # tensor-parallel degree
    sp: bool  # sequence parallel: norms/dropout/residual on s/t tokens
    flash: bool  # FlashAttention-style fused attention (no s×s tensor in memory)
    elem_bytes: int  # activation element size (2 for bf16/fp16, 4 for fp32)

    @classmethod
    def of(cls, cfg: ModelConfig, *, micro_batch: int, seq_len: int, tp: int, sp: bool, flash: bool,
           elem_bytes: int) -> LayerShape:
        return cls(b=micro_batch, s=seq_len, h=cfg.d_model, heads=cfg.n_head, kv_heads=cfg.kv_heads,
                   head_dim=cfg.head_dim, ff=cfg.ffn_dim, gated=cfg.style == "llama",
                   dropout=cfg.dropout > 0, rope=cfg.style == "llama", t=tp, sp=sp and tp > 1, flash=flash,
                   elem_bytes=elem_bytes)

    @property
    def tokens(self) -> int:
        return self.b * self.s


@dataclass(frozen=True)
class LayerTimes:
    """Seconds per micro-batch for one layer on one device (communication excluded)."""

    fwd: float
    bwd: float
    attn_core_fwd: float  # the part selective recompute re-runs (attention scores/softmax/AV)
    qkv_gemm: float  # overlap windows for backward tensor-parallel communication
    fc1_gemm: float
    fwd_flops: float  # executed FLOPs of one forward (per device)
    attn_core_flops: float


def layer_times(dev: Device, L: LayerShape) -> LayerTimes:
    """Forward and backward time of one transformer layer on one device."""
    e, t, n = L.elem_bytes, L.t, L.tokens
    q_dim = L.heads * L.head_dim
    kv_dim = L.kv_heads * L.head_dim
    heads_local = L.heads / t
    ffn_mats = 2 if L.gated else 1
    # ---- GEMMs: forward time; backward = data-gradient + weight-gradient GEMM of the same size.
    qkv = gemm_time(dev, n, L.h, (q_dim + 2 * kv_dim) / t, e)
    proj = gemm_time(dev, n, q_dim / t, L.h, e)
    fc1 = gemm_time(dev, n, L.h, ffn_mats * L.ff / t, e)
    fc2 = gemm_time(dev, n, L.ff / t, L.h, e)
    dense_flops = 2 * n * L.h * (q_dim + 2 * kv_dim + q_dim + (ffn_mats + 1) * L.ff) / t
    core_flops = 4 * L.b * heads_local * L.s * L.s * L.head_dim  # QKᵀ and AV, full s×s (PaLM convention)
    if L.flash:
        executed = core_flops / 2  # causal: the kernel skips the masked half
        eff = dev.attention_efficiency or 0.8 * gemm_efficiency(dev, executed)
        core_fwd = executed / (dev.peak_flops * eff) + dev.kernel_s
        # Backward recomputes the scores and runs dQ, dK, dV: 2.5× the forward's matmul work.
        core_bwd = 2.5 * executed / (dev.peak_flops * eff * FLASH_BWD_REL) + dev.kernel_s
        core_mem_fwd = core_mem_bwd = 0.0
    else:
        score = gemm_time(dev, L.s, L.head_dim, L.s, e, batch=L.b * heads_local)
        av = gemm_time(dev, L.s, L.s, L.head_dim, e, batch=L.b * heads_local)
        core_fwd = score + av
        core_bwd = 2 * (score + av)
        S = L.b * heads_local * L.s * L.s  # attention-probability elements
        mask = 1 if L.dropout else 0
        # Fused scale-mask-softmax (read, write), then dropout (read, write, 1-byte mask).
        core_mem_fwd = mem_time(dev, 2 * e * S) + (mem_time(dev, (2 * e + mask) * S) if L.dropout else 0.0)
        core_mem_bwd = mem_time(dev, 3 * e * S) + (mem_time(dev, (2 * e + mask) * S) if L.dropout else 0.0)
    # ---- Memory-bound kernels on the residual stream (x elements) and the FFN hidden (f elements).
    x = n * L.h / (t if L.sp else 1)
    f = n * L.ff / t
    mask = 1 if L.dropout else 0
    norm_fwd, norm_bwd = mem_time(dev, 2 * e * x), mem_time(dev, 3 * e * x)
    resid_fwd = resid_bwd = mem_time(dev, (3 * e + mask) * x)  # (bias +) dropout + residual add, fused
    if L.gated:
        act_fwd, act_bwd = mem_time(dev, 3 * e * f), mem_time(dev, 5 * e * f)  # SwiGLU
    else:
        act_fwd, act_bwd = mem_time(dev, 2 * e * f), mem_time(dev, 3 * e * f)  # bias + GeLU, fused
    rope = mem_time(dev, 2 * e * n * (q_dim + kv_dim) / t) if L.rope else 0.0
    fwd = (qkv + proj + fc1 + fc2 + core_fwd + core_mem_fwd
           + 2 * norm_fwd + 2 * resid_fwd + act_fwd + rope)
    bwd = (2 * (qkv + proj + fc1 + fc2) + core_bwd + core_mem_bwd
           + 2 * norm_bwd + 2 * resid_bwd + act_bwd + rope)
    return LayerTimes(fwd=fwd, bwd=bwd, attn_core_fwd=core_fwd + core_mem_fwd, qkv_gemm=qkv, fc1_gemm=fc1,
                      fwd_flops=dense_flops + core_flops, attn_core_flops=core_flops)


@dataclass(frozen=True)
class HeadTimes:
    fwd: float
    bwd: float


def output_head_times(dev: Device, *, tokens: int, h: int, vocab: int, t: int, elem_bytes: int) -> HeadTimes:
    """Final norm, output projection (vocabulary split over t) and cross-entropy in fp32."""
    e = elem_bytes
    logits = tokens * vocab / t
    gemm = gemm_time(dev, tokens, h, vocab / t, e)
    norm_fwd, norm_bwd = mem_time(dev, 2 * e * tokens * h), mem_time(dev, 3 * e * tokens * h)
    # Cross-entropy: cast to fp32, max/exp/sum passes, then softmax − one-hot in backward.
    ce_fwd = mem_time(dev, (e + 3 * 4) * logits)
    ce_bwd = mem_time(dev, (3 * 4 + e) * logits)
    return HeadTimes(fwd=norm_fwd + gemm + ce_fwd, bwd=norm_bwd + 2 * gemm + ce_bwd)


def embedding_times(dev: Device, *, tokens: int, h: int, elem_bytes: int) -> HeadTimes:
    """Token (+ position) embedding lookup: a gather forward, a scatter-add of gradients backward."""
    nbytes = 2 * elem_bytes * tokens * h
    return HeadTimes(fwd=mem_time(dev, nbytes), bwd=mem_time(dev, 2 * nbytes))
