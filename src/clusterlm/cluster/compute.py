"""Compute-time model of one accelerator: GEMMs, memory-bound kernels, one transformer layer.

Every kernel is timed with a roofline plus a fixed per-kernel cost:

    t = max(FLOPs / (peak · η_gemm),  bytes / (HBM bandwidth · η_mem))  +  t_kernel

η_gemm is the accelerator's sustained large-GEMM efficiency (catalog, from matmul
microbenchmarks), or, for a probed CPU, an interpolation in a measured table of GEMM size →
efficiency. Small GEMMs lose efficiency through the two other terms: the memory roofline
(attention's batched GEMMs with K = head_dim are bandwidth-bound on an A100) and the fixed kernel
cost (launch + tail). A wave-quantisation term (output tiles per SM, NVIDIA's matrix-multiplication
guide) was tried and dropped: with the measured sustained clocks it made the calibration runs 4-7 %
too slow on average, i.e. cuBLAS's choice among tile shapes hides most of it at training shapes.
Element-wise work (norms, softmax, GeLU/SwiGLU, dropout, residual adds, cross-entropy) is
bandwidth-bound: the bytes each kernel reads and writes, counted per kernel as fused in
Megatron-LM / PyTorch, or operator by operator for eager PyTorch. With FP8, the transformer layers' GEMMs run
at the FP8 peak and efficiency and pay for casting their inputs (Transformer Engine's recipe);
attention and the output layer stay in 16-bit.

All quantities are per micro-batch on one device, after tensor (t), sequence and context split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clusterlm.cluster.catalog import Accelerator
from clusterlm.config.model import ModelConfig

# FlashAttention backward relative to its forward (Dao 2023: the backward kernel reaches ≈ 80–85 %
# of the forward's FLOP rate). Causal kernels skip the upper triangle (half the work).
FLASH_BWD_REL = 0.85
FP8_CAST_BYTES = 3  # read a 16-bit element, write its 8-bit copy

# Eager PyTorch (operator by operator, as the Llama reference code and torchtitan write them)
# instead of one fused kernel, for 16-bit activations: (bytes moved per element, kernels).
#   RMSNorm forward: x.float() 2+4, pow 4+4, mean 4, x·rsqrt 4+4, type_as 4+2, ·weight 2+2 = 36 B;
#     backward: ·weight and its weight-grad 6+4, cast 6, ·rsqrt 8, Σ g·x 8, pow' 12, add 12,
#     cast 6 = 62 B (fused: 2e and 3e).
#   SwiGLU forward: silu 2+2, ·up 2+2+2 = 10 B; backward: three products of 6 B = 18 B (fused: 3e, 5e).
#   RoPE (complex multiply) per q/k element: cast 2+4, multiply 4+4, cast back 4+2 = 20 B each way
#     (fused: 2e).
EAGER_RMSNORM = ((36, 6), (62, 10))
EAGER_SWIGLU = ((10, 2), (18, 3))
EAGER_ROPE = ((20, 3), (20, 3))


@dataclass(frozen=True)
class Device:
    """One accelerator in one precision: the numbers the kernel timing needs."""

    peak_flops: float
    mem_bytes_per_s: float  # effective (bandwidth × memory efficiency)
    gemm_efficiency: float
    kernel_s: float
    gemm_table: tuple[tuple[float, float], ...] = ()
    attention_efficiency: float | None = None
    fp8_peak_flops: float | None = None  # set only when the layers' GEMMs run in FP8
    fp8_efficiency: float | None = None

    @classmethod
    def of(cls, acc: Accelerator, dtype: str, fp8: bool = False, attention: str = "flash") -> Device:
        attn = acc.attention_efficiency_fa3 if attention == "flash3" else acc.attention_efficiency
        return cls(
            peak_flops=acc.peak_flops(dtype),
            mem_bytes_per_s=acc.memory_bandwidth_gb_s * 1e9 * acc.memory_efficiency,
            gemm_efficiency=acc.gemm_efficiency,
            kernel_s=acc.kernel_overhead_us * 1e-6,
            gemm_table=acc.gemm_table,
            attention_efficiency=attn,
            fp8_peak_flops=acc.peak_flops("fp8") if fp8 else None,
            fp8_efficiency=acc.gemm_efficiency_fp8 if fp8 else None,
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


def gemm_time(dev: Device, m: float, k: float, n: float, elem_bytes: float, batch: float = 1,
              low_precision: bool = False) -> float:
    """(batch ×) [m×k]·[k×n]: roofline of compute and operand traffic, plus the kernel cost."""
    flops = 2.0 * m * k * n * batch
    traffic = elem_bytes * (m * k + k * n + m * n) * batch
    if low_precision and dev.fp8_peak_flops:
        peak, eff = dev.fp8_peak_flops, dev.fp8_efficiency or dev.gemm_efficiency
    else:
        peak, eff = dev.peak_flops, gemm_efficiency(dev, flops)
    compute = flops / (peak * eff)
    return max(compute, traffic / dev.mem_bytes_per_s) + dev.kernel_s


def mem_time(dev: Device, nbytes: float) -> float:
    """A bandwidth-bound kernel moving `nbytes` (reads + writes)."""
    return nbytes / dev.mem_bytes_per_s + dev.kernel_s


def linear_times(dev: Device, tokens: float, k: float, n: float, elem_bytes: int, fp8: bool) -> tuple[float, float]:
    """Forward and backward seconds of one linear layer y[tokens×n] = x[tokens×k]·W[k×n].

    Backward is two GEMMs with their own output shapes: the data gradient (tokens×k) and the
    weight gradient (k×n, reducing over tokens). FP8 adds the casts of input, weight and output
    gradient.
    """
    e = 1 if fp8 else elem_bytes
    fwd = gemm_time(dev, tokens, k, n, e, low_precision=fp8)
    bwd = gemm_time(dev, tokens, n, k, e, low_precision=fp8) + gemm_time(dev, k, tokens, n, e, low_precision=fp8)
    if fp8:
        fwd += mem_time(dev, FP8_CAST_BYTES * (tokens * k + k * n))
        bwd += mem_time(dev, FP8_CAST_BYTES * tokens * n)
    return fwd, bwd


@dataclass(frozen=True)
class LayerShape:
    """A transformer layer's dimensions as one device sees them (per micro-batch)."""

    b: int  # micro-batch (sequences)
    s: int  # tokens of each sequence on this device (seq_len / context-parallel degree)
    s_kv: int  # keys each query attends over (the whole sequence)
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
    fp8: bool = False  # the four projections' GEMMs in FP8
    eager: bool = False  # RMSNorm, SwiGLU and RoPE as separate PyTorch operators (Llama style only)

    @classmethod
    def of(cls, cfg: ModelConfig, *, micro_batch: int, seq_len: int, tp: int, sp: bool, flash: bool,
           elem_bytes: int, cp: int = 1, fp8: bool = False, eager: bool = False) -> LayerShape:
        return cls(b=micro_batch, s=seq_len // cp, s_kv=seq_len, h=cfg.d_model, heads=cfg.n_head,
                   kv_heads=cfg.kv_heads, head_dim=cfg.head_dim, ff=cfg.ffn_dim, gated=cfg.style == "llama",
                   dropout=cfg.dropout > 0, rope=cfg.style == "llama", t=tp, sp=sp and tp > 1, flash=flash,
                   elem_bytes=elem_bytes, fp8=fp8, eager=eager and cfg.style == "llama")

    @property
    def tokens(self) -> int:
        return self.b * self.s


@dataclass(frozen=True)
class LayerTimes:
    """Seconds per micro-batch for one layer on one device (communication excluded)."""

    fwd: float
    bwd: float
    attn_core_fwd: float  # the part selective recompute re-runs (attention scores/softmax/AV)
    attn_core_bwd: float
    qkv_gemm: float  # overlap windows for backward tensor-parallel communication
    fc1_gemm: float
    fwd_flops: float  # executed FLOPs of one forward (per device)
    attn_core_flops: float


def _attention_core(dev: Device, L: LayerShape) -> tuple[float, float, float]:
    """QKᵀ, softmax and AV: forward seconds, backward seconds and the PaLM-convention FLOPs."""
    e, heads_local = L.elem_bytes, L.heads / L.t
    core_flops = 4 * L.b * heads_local * L.s * L.s_kv * L.head_dim  # full s×s (PaLM convention)
    if L.flash:
        executed = core_flops / 2  # causal: the kernel skips the masked half
        eff = dev.attention_efficiency or 0.8 * gemm_efficiency(dev, executed)
        fwd = executed / (dev.peak_flops * eff) + dev.kernel_s
        # Backward recomputes the scores and runs dQ, dK, dV: 2.5× the forward's matmul work.
        bwd = 2.5 * executed / (dev.peak_flops * eff * FLASH_BWD_REL) + dev.kernel_s
        return fwd, bwd, core_flops
    score = gemm_time(dev, L.s, L.head_dim, L.s_kv, e, batch=L.b * heads_local)
    av = gemm_time(dev, L.s, L.s_kv, L.head_dim, e, batch=L.b * heads_local)
    S = L.b * heads_local * L.s * L.s_kv  # attention-probability elements
    mask = 1 if L.dropout else 0
    # Fused scale-mask-softmax (read, write), then dropout (read, write, 1-byte mask).
    drop = mem_time(dev, (2 * e + mask) * S) if L.dropout else 0.0
    fwd = score + av + mem_time(dev, 2 * e * S) + drop
    bwd = 2 * (score + av) + mem_time(dev, 3 * e * S) + drop
    return fwd, bwd, core_flops


def layer_times(dev: Device, L: LayerShape) -> LayerTimes:
    """Forward and backward time of one transformer layer on one device."""
    e, t, n = L.elem_bytes, L.t, L.tokens
    q_dim = L.heads * L.head_dim
    kv_dim = L.kv_heads * L.head_dim
    ffn_mats = 2 if L.gated else 1
    # ---- the four projections: forward GEMM, backward data- and weight-gradient GEMMs
    qkv = linear_times(dev, n, L.h, (q_dim + 2 * kv_dim) / t, e, L.fp8)
    proj = linear_times(dev, n, q_dim / t, L.h, e, L.fp8)
    fc1 = linear_times(dev, n, L.h, ffn_mats * L.ff / t, e, L.fp8)
    fc2 = linear_times(dev, n, L.ff / t, L.h, e, L.fp8)
    dense_flops = 2 * n * L.h * (q_dim + 2 * kv_dim + q_dim + (ffn_mats + 1) * L.ff) / t
    core_fwd, core_bwd, core_flops = _attention_core(dev, L)
    # ---- Memory-bound kernels on the residual stream (x elements) and the FFN hidden (f elements).
    x = n * L.h / (t if L.sp else 1)
    f = n * L.ff / t
    mask = 1 if L.dropout else 0
    norm_fwd, norm_bwd = mem_time(dev, 2 * e * x), mem_time(dev, 3 * e * x)
    resid = mem_time(dev, (3 * e + mask) * x)  # (bias +) dropout + residual add, fused
    if L.gated:
        act_fwd, act_bwd = mem_time(dev, 3 * e * f), mem_time(dev, 5 * e * f)  # SwiGLU
    else:
        act_fwd, act_bwd = mem_time(dev, 2 * e * f), mem_time(dev, 3 * e * f)  # bias + GeLU, fused
    qk = n * (q_dim + kv_dim) / t
    rope_fwd = rope_bwd = mem_time(dev, 2 * e * qk) if L.rope else 0.0
    if L.eager:
        norm_fwd, norm_bwd = (_eager(dev, x, *c) for c in EAGER_RMSNORM)
        act_fwd, act_bwd = (_eager(dev, f, *c) for c in EAGER_SWIGLU)
        rope_fwd, rope_bwd = (2 * _eager(dev, qk / 2, *c) for c in EAGER_ROPE)  # q and k separately
    gemm_fwd = qkv[0] + proj[0] + fc1[0] + fc2[0]
    gemm_bwd = qkv[1] + proj[1] + fc1[1] + fc2[1]
    fwd = gemm_fwd + core_fwd + 2 * norm_fwd + 2 * resid + act_fwd + rope_fwd
    bwd = gemm_bwd + core_bwd + 2 * norm_bwd + 2 * resid + act_bwd + rope_bwd
    return LayerTimes(fwd=fwd, bwd=bwd, attn_core_fwd=core_fwd, attn_core_bwd=core_bwd, qkv_gemm=qkv[0],
                      fc1_gemm=fc1[0], fwd_flops=dense_flops + core_flops, attn_core_flops=core_flops)


def _eager(dev: Device, elems: float, bytes_per_elem: int, kernels: int) -> float:
    """Operator-by-operator element-wise work: its bytes plus one launch per operator."""
    return elems * bytes_per_elem / dev.mem_bytes_per_s + kernels * dev.kernel_s


@dataclass(frozen=True)
class HeadTimes:
    fwd: float
    bwd: float


def output_head_times(dev: Device, *, tokens: int, h: int, vocab: int, t: int, elem_bytes: int) -> HeadTimes:
    """Final norm, output projection (vocabulary split over t) and cross-entropy in fp32."""
    e = elem_bytes
    logits = tokens * vocab / t
    gemm_fwd, gemm_bwd = linear_times(dev, tokens, h, vocab / t, e, fp8=False)  # stays 16-bit under FP8
    norm_fwd, norm_bwd = mem_time(dev, 2 * e * tokens * h), mem_time(dev, 3 * e * tokens * h)
    # Cross-entropy: cast to fp32, max/exp/sum passes, then softmax − one-hot in backward.
    ce_fwd = mem_time(dev, (e + 3 * 4) * logits)
    ce_bwd = mem_time(dev, (3 * 4 + e) * logits)
    return HeadTimes(fwd=norm_fwd + gemm_fwd + ce_fwd, bwd=norm_bwd + gemm_bwd + ce_bwd)


def embedding_times(dev: Device, *, tokens: int, h: int, elem_bytes: int) -> HeadTimes:
    """Token (+ position) embedding lookup: a gather forward, a scatter-add of gradients backward."""
    nbytes = 2 * elem_bytes * tokens * h
    return HeadTimes(fwd=mem_time(dev, nbytes), bwd=mem_time(dev, 2 * nbytes))
