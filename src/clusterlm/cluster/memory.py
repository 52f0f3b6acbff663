"""Memory per device: weights, gradients, optimizer state, activations, buffers.

Model state (Rajbhandari et al. 2020, "ZeRO"): mixed-precision Adam keeps 2-byte weights,
gradients (2 bytes, or 4 with fp32 gradient accumulation as Megatron-LM does) and 12 bytes of
fp32 master weights and Adam moments per parameter; plain fp32 training keeps 4 + 4 + 8.
ZeRO-1 shards the optimizer state over the d data-parallel ranks, ZeRO-2 also the gradients,
ZeRO-3 / FSDP also the weights.

Activations per transformer layer follow Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models", §4), generalised from their GPT layer to
grouped-query attention, SwiGLU, any element size and no-dropout models. With 2-byte
elements, dropout and a GeLU MLP of 4h they reduce exactly to the paper's
s·b·h·(10 + 24/t + 5·a·s/(h·t)) (tensor parallel), (34·s·b·h + 5·a·s²·b)/t (plus sequence
parallel), 34·s·b·h/t (plus selective recompute) and 2·s·b·h (full recompute).
The first pipeline stage holds activations of min(p, m) micro-batches under 1F1B, times
(1 + (p−1)/(p·v)) with v interleaved chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterlm.config.model import ModelConfig
from clusterlm.model.flops import param_breakdown

GIB = 2**30
RECOMPUTE_MODES = ("none", "selective", "full")


@dataclass(frozen=True)
class StateBytes:
    """Bytes per parameter of each kind of model state (before ZeRO sharding)."""

    weights: int
    grads: int
    optimizer: int

    @classmethod
    def of(cls, precision: str, grad_dtype: str | None = None) -> StateBytes:
        if precision == "fp32":
            return cls(4, 4, 8)
        grads = 4 if grad_dtype == "fp32" else 2
        return cls(2, grads, 12)


@dataclass(frozen=True)
class ActivationShape:
    b: int
    s: int
    h: int
    heads: int
    kv_heads: int
    head_dim: int
    ff: int
    gated: bool
    dropout: bool
    t: int
    sp: bool
    flash: bool
    elem_bytes: int


def layer_activation_bytes(x: ActivationShape, recompute: str) -> float:
    """Bytes one layer keeps for backward per micro-batch on one device."""
    e, t = x.elem_bytes, x.t
    sbh = x.s * x.b * x.h
    rep = t if x.sp else 1  # residual-stream tensors are split by sequence parallelism only
    mask = 1 if x.dropout else 0
    if recompute == "full":
        return e * sbh / rep  # the layer input; everything else is recomputed in backward
    q = x.heads * x.head_dim
    kv = x.kv_heads * x.head_dim
    sb = x.s * x.b
    attn = (
        e * sbh / rep  # QKV input (norm output)
        + e * sb * (q + kv) / t  # Q and K for QKᵀ
        + e * sb * kv / t  # V
        + e * sb * q / t  # output-projection input (attention context)
        + mask * sbh / rep  # dropout mask after the projection
    )
    if x.flash:
        # The fused kernel keeps its output (for its backward) and fp32 log-sum-exp rows instead
        # of s×s tensors; the output-projection input above is a re-laid-out copy of it.
        attn += e * sb * q / t + 4 * x.b * x.heads / t * x.s
    elif recompute != "selective":
        probs = x.b * x.heads / t * x.s * x.s
        attn += e * probs + (mask + e) * probs * (1 if x.dropout else 0)  # softmax out, mask, dropout out
    ffn_in = 2 if x.gated else 1  # SwiGLU keeps gate and up projections
    mlp = (
        e * sbh / rep  # first linear input
        + e * sb * x.ff * ffn_in / t  # activation-function input(s)
        + e * sb * x.ff / t  # second linear input
        + mask * sbh / rep  # dropout mask
    )
    norms = 2 * e * sbh / rep
    return attn + mlp + norms


def in_flight_factor(pp: int, micro_batches: int, interleave: int) -> float:
    """Micro-batches' worth of activations the first stage holds (1F1B, Korthikanti §4.2.3)."""
    if pp == 1:
        return 1.0
    base = float(min(pp, micro_batches))
    if interleave > 1:
        base *= 1 + (pp - 1) / (pp * interleave)
    return base


@dataclass(frozen=True)
class StageParams:
    first: float  # parameters on the first pipeline stage (per device, after TP split)
    last: float
    layers_only: float  # transformer-layer parameters of one stage (the Korthikanti Fig. 1 quantity)
    largest_layer: float  # one layer's parameters (full, before any split) — ZeRO-3 gather size


def stage_params(cfg: ModelConfig, tp: int, pp: int) -> StageParams:
    """Parameters per device on the first and last pipeline stages."""
    pb = param_breakdown(cfg)
    L = cfg.n_layer
    per_layer_matmul = pb.block_matmul / L
    per_layer_other = (pb.blocks - pb.block_matmul) / L  # norms and biases, replicated over TP
    per_layer_local = per_layer_matmul / tp + per_layer_other
    layers = L / pp * per_layer_local
    embed = pb.embedding / tp + pb.position
    head = pb.head / tp
    if pp == 1:
        first = last = layers + embed + head + pb.final_norm
    else:
        first = layers + embed
        # A tied output head still needs its own copy of the embedding on the last stage.
        last = layers + pb.final_norm + (head if pb.head else pb.embedding / tp)
    return StageParams(first=first, last=last, layers_only=layers, largest_layer=pb.blocks / L)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per device on the most loaded pipeline stage."""

    weights: float
    grads: float
    optimizer: float
    activations: float  # transformer layers, all in-flight micro-batches
    embedding_logits: float  # embedding output, output-layer input, fp32 logits for the loss
    temporary: float  # working buffers: recompute, backward, gathers, communication
    runtime: float  # framework / CUDA context / process baseline
    capacity: float
    stage: str  # "first" | "last"

    @property
    def total(self) -> float:
        return (self.weights + self.grads + self.optimizer + self.activations + self.embedding_logits
                + self.temporary + self.runtime)

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity

    def gib(self) -> dict[str, float]:
        return {
            "weights": self.weights / GIB, "grads": self.grads / GIB, "optimizer": self.optimizer / GIB,
            "activations": self.activations / GIB, "embedding_logits": self.embedding_logits / GIB,
            "temporary": self.temporary / GIB, "runtime": self.runtime / GIB, "total": self.total / GIB,
            "capacity": self.capacity / GIB,
        }


def memory_breakdown(cfg: ModelConfig, *, seq_len: int, tp: int, pp: int, dp: int, micro_batch: int,
                     interleave: int, micro_batches: int, sequence_parallel: bool, flash: bool, recompute: str,
                     zero: int, elem_bytes: int, state: StateBytes, runtime_bytes: float,
                     capacity_bytes: float) -> MemoryBreakdown:
    """Bytes per device on the most loaded pipeline stage (first or last)."""
    t, p, d, b, s, elem = tp, pp, dp, micro_batch, seq_len, elem_bytes
    sp = sequence_parallel
    V, h = cfg.require_vocab(), cfg.d_model
    shape = ActivationShape(b=b, s=s, h=h, heads=cfg.n_head, kv_heads=cfg.kv_heads, head_dim=cfg.head_dim,
                            ff=cfg.ffn_dim, gated=cfg.style == "llama", dropout=cfg.dropout > 0, t=t, sp=sp,
                            flash=flash, elem_bytes=elem)
    per_layer = layer_activation_bytes(shape, recompute)
    layers = cfg.n_layer // p
    in_flight = in_flight_factor(p, micro_batches, interleave)
    params = stage_params(cfg, t, p)
    rep = t if sp else 1
    sbh = s * b * h
    mask = 1 if cfg.dropout > 0 else 0
    # Output layer: its input, the logits it produced, their fp32 copy when they come out in 16-bit,
    # and the fp32 log-softmax the loss keeps — for the one micro-batch in flight on the last stage.
    logits = s * b * V / t * (elem + 4 + (4 if elem < 4 else 0))
    last_extra = 2 * elem * sbh / rep + logits
    first_extra = (mask + elem) * sbh / rep * in_flight  # embedding output (and its dropout mask)
    # Working buffers beyond what is kept for backward: the recomputed layer (full: one layer's
    # complete activations; selective: its attention scores), gradient of the largest activation,
    # the loss backward's fp32 gradient, ZeRO-3's gathered layers, communication buckets.
    full_layer = layer_activation_bytes(shape, "none")
    recompute_buf = {"none": 0.0, "selective": full_layer - per_layer if not flash else 0.0,
                     "full": full_layer}[recompute]
    grad_buf = 2 * elem * s * b * max(cfg.ffn_dim * (2 if cfg.style == "llama" else 1), h) / t
    gather_buf = 2 * params.largest_layer * elem / t if zero == 3 and d > 1 else 0.0
    bucket = 2 * 25 * 2**20 if d > 1 else 0.0
    # Loss backward: the gradient of the fp32 log-softmax and of its input (cast back when 16-bit).
    loss_grad = s * b * V / t * (4 + 4 + (elem if elem < 4 else 0))

    def stage(n_params: float, extra: float, loss: float, held: float, name: str) -> MemoryBreakdown:
        return MemoryBreakdown(
            weights=shard(n_params * state.weights, d, zero >= 3),
            grads=shard(n_params * state.grads, d, zero >= 2),
            optimizer=shard(n_params * state.optimizer, d, zero >= 1),
            activations=layers * per_layer * held, embedding_logits=extra,
            temporary=max(recompute_buf + grad_buf, loss) + gather_buf + bucket,
            runtime=runtime_bytes, capacity=capacity_bytes, stage=name)

    if p == 1:
        return stage(params.first, first_extra + last_extra, loss_grad, in_flight, "first")
    first = stage(params.first, first_extra, 0.0, in_flight, "first")
    last = stage(params.last, last_extra, loss_grad, 1.0, "last")  # 1F1B: one micro-batch in flight
    return first if first.total >= last.total else last


def shard(nbytes: float, dp: int, sharded: bool) -> float:
    return nbytes / dp if sharded else nbytes
