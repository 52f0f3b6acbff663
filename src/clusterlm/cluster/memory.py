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


def in_flight_factor(pp: int, micro_batches: int, interleave: int, stage: int = 0) -> float:
    """Micro-batches' worth of activations pipeline stage `stage` holds (1F1B, Korthikanti §4.2.3).

    Stage i of p keeps min(p − i, m) micro-batches in flight (the first p, the last 1); with v
    interleaved chunks every stage but the last holds (1 + (p − 1)/(p·v)) times as much.
    """
    if pp == 1:
        return 1.0
    base = float(min(pp - stage, micro_batches))
    if interleave > 1 and stage < pp - 1:
        base *= 1 + (pp - 1) / (pp * interleave)
    return base


@dataclass(frozen=True)
class StageParams:
    first: float  # parameters on the first pipeline stage (per device, after TP split)
    last: float
    layers_only: float  # transformer-layer parameters of one stage (the Korthikanti Fig. 1 quantity)


def device_params(cfg: ModelConfig, tp: int, layers: int, first: bool, last: bool) -> float:
    """Parameters on one device holding `layers` layers (and the embedding / head if first / last)."""
    pb = param_breakdown(cfg)
    L = cfg.n_layer
    per_layer_local = (pb.block_matmul / tp + (pb.blocks - pb.block_matmul)) / L  # norms, biases replicated
    n = layers * per_layer_local
    if first:
        n += pb.embedding / tp + pb.position
    if last:
        # A tied output head still needs its own copy of the embedding on a separate last stage.
        n += pb.final_norm + (pb.head / tp if pb.head or first else pb.embedding / tp)
    return n


def stage_params(cfg: ModelConfig, tp: int, pp: int) -> StageParams:
    """Parameters per device on the first and last pipeline stages of an even split."""
    per_stage = cfg.n_layer / pp
    layers = device_params(cfg, tp, per_stage, False, False)
    first = device_params(cfg, tp, per_stage, True, pp == 1)
    last = device_params(cfg, tp, per_stage, pp == 1, True)
    return StageParams(first=first, last=last, layers_only=layers)


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
                     capacity_bytes: float, device_layers: tuple[int, ...] | None = None, cp: int = 1,
                     shard_degree: int | None = None, recompute_fraction: float = 1.0) -> MemoryBreakdown:
    """Bytes per device on the most loaded pipeline stage.

    `device_layers` gives each pipeline stage's layer count (default: an even split); context
    parallelism (`cp`) divides every per-token tensor; ZeRO shards state over `shard_degree` ranks
    (default d; c·d_shard with context parallelism and HSDP).
    """
    t, p, d, b, elem = tp, pp, dp, micro_batch, elem_bytes
    s = seq_len // cp  # tokens of each sequence on this device
    sp = sequence_parallel
    n_shard = shard_degree if shard_degree is not None else d
    V, h = cfg.require_vocab(), cfg.d_model
    shape = ActivationShape(b=b, s=s, h=h, heads=cfg.n_head, kv_heads=cfg.kv_heads, head_dim=cfg.head_dim,
                            ff=cfg.ffn_dim, gated=cfg.style == "llama", dropout=cfg.dropout > 0, t=t, sp=sp,
                            flash=flash, elem_bytes=elem)
    full_layer = layer_activation_bytes(shape, "none")
    per_layer = layer_activation_bytes(shape, recompute)
    if recompute == "full":  # a fraction f of layers recomputed, the rest keep everything
        per_layer = recompute_fraction * per_layer + (1 - recompute_fraction) * full_layer
    layers = device_layers or (cfg.n_layer // p,) * p
    rep = t if sp else 1
    sbh = s * b * h
    mask = 1 if cfg.dropout > 0 else 0
    # Output layer: its input and the fp32 log-softmax (or softmax) the loss keeps for backward —
    # PyTorch's log_softmax and Megatron's vocab-parallel cross-entropy each save one fp32 tensor;
    # the 16-bit logits and their fp32 copy are transient — for the one micro-batch in flight.
    logits = s * b * V / t * 4
    last_extra = 2 * elem * sbh / rep + logits
    # Working buffers beyond what is kept for backward: the recomputed layer (full: one layer's
    # complete activations; selective: its attention scores), gradient of the largest activation,
    # the loss backward's fp32 gradient, ZeRO-3's gathered layers, communication buckets.
    recompute_buf = {"none": 0.0, "selective": full_layer - per_layer if not flash else 0.0,
                     "full": full_layer}[recompute]
    grad_buf = 2 * elem * s * b * max(cfg.ffn_dim * (2 if cfg.style == "llama" else 1), h) / t
    largest_layer = param_breakdown(cfg).blocks / cfg.n_layer
    gather_buf = 2 * largest_layer * elem / t if zero == 3 and n_shard > 1 else 0.0
    bucket = 2 * 25 * 2**20 if d * cp > 1 else 0.0
    # Loss backward: the fp32 gradients of the log-softmax output and of its input, both live at
    # once (more than the forward's transient 16-bit logits + fp32 copy, 6 bytes per element).
    loss_grad = s * b * V / t * (4 + 4)

    def stage(i: int) -> MemoryBreakdown:
        first, last = i == 0, i == p - 1
        held = in_flight_factor(p, micro_batches, interleave, i)
        n_params = device_params(cfg, t, layers[i], first, last)
        extra = ((mask + elem) * sbh / rep * held if first else 0.0) + (last_extra if last else 0.0)
        name = "first" if first else ("last" if last else f"stage {i}")
        return MemoryBreakdown(
            weights=shard(n_params * state.weights, n_shard, zero >= 3),
            grads=shard(n_params * state.grads, n_shard, zero >= 2),
            optimizer=shard(n_params * state.optimizer, n_shard, zero >= 1),
            activations=layers[i] * per_layer * held, embedding_logits=extra,
            temporary=max(recompute_buf + grad_buf, loss_grad if last else 0.0) + gather_buf + bucket,
            runtime=runtime_bytes, capacity=capacity_bytes, stage=name)

    return max((stage(i) for i in range(p)), key=lambda m: m.total)


def shard(nbytes: float, ranks: int, sharded: bool) -> float:
    return nbytes / ranks if sharded else nbytes
