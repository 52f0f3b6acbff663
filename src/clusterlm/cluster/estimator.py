"""Predict one training configuration on a cluster: memory and time per optimizer step.

`estimate(workload, cluster, execution)` is a pure function of three plain objects
(`workload.py`: what to train and with which layout; `spec.py`: the resolved hardware).
Step time (per optimizer step):

    T = m · t_max + (p − 1)/v · t_mean  +  exposed DP communication  +  optimizer step

where t_max / t_mean are the slowest / average pipeline stage's time per micro-batch (its
layers' forward + backward + recompute + exposed tensor- and context-parallel communication +
pipeline send/receive; the first stage adds the embedding, the last the output layer and loss).
Stages may hold different layer counts (`pipeline.py`). With p = 1 this is m · t_stage. Model
FLOPs come from `clusterlm.model.flops` (PaLM convention), so a plan and a training run's MFU use
one definition. Run totals (days, energy, cost, batch ramp-up) are in `totals.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from clusterlm.cluster import comms
from clusterlm.cluster.compute import (
    Device,
    LayerShape,
    LayerTimes,
    embedding_times,
    layer_times,
    mem_time,
    output_head_times,
)
from clusterlm.cluster.memory import MemoryBreakdown, StateBytes, device_params, memory_breakdown, stage_params
from clusterlm.config.pipeline import StageSplit
from clusterlm.cluster.spec import Cluster
from clusterlm.cluster.workload import (  # noqa: F401  (re-exported: the estimator's public inputs)
    ELEM_BYTES,
    PRECISIONS,
    Execution,
    Workload,
    check,
    effective_batch,
    micro_batches,
)
from clusterlm.config.model import ModelConfig
from clusterlm.model.flops import flops_per_token, recompute_flops_per_token

DDP_BUCKET_BYTES = 25 * 2**20  # PyTorch DDP's default bucket: the part of the gradient sync never hidden

# Optimizer-step memory traffic per parameter (bytes read + written, incl. gradient-norm clipping).
# Fused/multi-tensor AdamW (GPU): one pass over weights, grads, master weights and moments.
# PyTorch's single-tensor AdamW (the CPU default): ≈ 8 separate element-wise passes.
FUSED_ADAM_EXTRA = 8  # grad-norm read + clip scaling, beyond the single pass
UNFUSED_ADAM_BYTES_FP32 = 96
UNFUSED_ADAM_KERNELS = 10


def param_tensors(cfg: ModelConfig) -> int:
    """Parameter tensors of a transformer built from `cfg` (weights, biases, norm scales)."""
    bias = cfg.use_bias
    if cfg.style == "llama":
        per_layer = 2 + 7 + (7 if bias else 0)  # two RMSNorm scales, q k v o gate up down
    else:
        per_layer = 2 * (2 if bias else 1) + 6 + (6 if bias else 0)  # two LayerNorms, q k v o fc proj
    embeddings = 1 + (1 if cfg.style == "gpt2" else 0) + (0 if cfg.tie_embeddings else 1)
    return cfg.n_layer * per_layer + embeddings + (2 if cfg.style == "gpt2" and bias else 1)


@dataclass(frozen=True)
class TimeBreakdown:
    """Seconds per optimizer step, attributed to what the slowest pipeline stage spends them on."""

    compute: float
    recompute: float
    tp_comm: float
    cp_comm: float
    pp_p2p: float
    pp_bubble: float
    dp_comm: float  # exposed part only
    optimizer: float

    @property
    def total(self) -> float:
        return (self.compute + self.recompute + self.tp_comm + self.cp_comm + self.pp_p2p + self.pp_bubble
                + self.dp_comm + self.optimizer)

    def as_dict(self) -> dict[str, float]:
        return {"compute": self.compute, "recompute": self.recompute, "tp_comm": self.tp_comm,
                "cp_comm": self.cp_comm, "pp_p2p": self.pp_p2p, "pp_bubble": self.pp_bubble,
                "dp_comm": self.dp_comm, "optimizer": self.optimizer, "total": self.total}


@dataclass(frozen=True)
class Estimate:
    workload: Workload
    execution: Execution
    cluster: Cluster
    memory: MemoryBreakdown
    time: TimeBreakdown
    micro_batches: int
    global_batch: int  # sequences per step actually trained (after per-replica rounding)
    split: StageSplit
    model_flops_per_step: float
    hardware_flops_per_step: float
    layer_weights_gib: float  # transformer-layer weights+grads+optimizer of the first stage (Fig. 1 quantity)
    layer_activations_gib: float  # transformer-layer activations of the most loaded stage
    extras: dict = field(default_factory=dict)

    @property
    def step_time_s(self) -> float:
        return self.time.total

    @property
    def num_gpus(self) -> int:
        return self.execution.num_gpus

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.workload.seq_len

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_time_s

    @property
    def model_tflops_per_gpu(self) -> float:
        return self.model_flops_per_step / self.step_time_s / self.num_gpus / 1e12

    @property
    def hardware_tflops_per_gpu(self) -> float:
        return self.hardware_flops_per_step / self.step_time_s / self.num_gpus / 1e12

    @property
    def mfu(self) -> float:
        """Against the compute precision's peak (also with --fp8, as NVIDIA and torchtitan report)."""
        peak = self.cluster.acc.peak_flops(self.execution.precision)
        return self.model_tflops_per_gpu * 1e12 / peak

    @property
    def fits(self) -> bool:
        return self.memory.fits


# ------------------------------------------------------------------------------------ one layer
def _tp_collectives(e: Execution, lt: LayerTimes, groups: comms.Groups, cluster: Cluster,
                    act_bytes: float) -> tuple[float, float]:
    """Exposed tensor-parallel communication of one layer: forward, backward seconds."""
    if e.tp == 1:
        return 0.0, 0.0

    def coll(kind: str) -> float:
        return comms.collective_time(kind, act_bytes, groups.tp, cluster)

    def hidden(comm: float, behind: float) -> float:
        return comms.overlapped(comm, behind, groups.tp) if e.tp_overlap else comm

    ar, ag, rs = coll(comms.ALL_REDUCE), coll(comms.ALL_GATHER), coll(comms.REDUCE_SCATTER)
    if not e.sequence_parallel:
        return 2 * ar, hidden(ar, lt.qkv_gemm) + hidden(ar, lt.fc1_gemm)
    # Backward: all-gathers for the row-parallel layers' output grads (needed at once),
    # reduce-scatters of input grads (overlappable with weight-gradient GEMMs) and, unless the
    # forward is recomputed, a second all-gather of the sharded norm output (Megatron keeps
    # only the 1/t shard).
    redo = 0.0 if e.recompute == "full" else hidden(ag, lt.qkv_gemm) + hidden(ag, lt.fc1_gemm)
    return 2 * ag + 2 * rs, 2 * ag + hidden(rs, lt.qkv_gemm) + hidden(rs, lt.fc1_gemm) + redo


def _cp_exchange(e: Execution, lt: LayerTimes, shape: LayerShape, groups: comms.Groups, cluster: Cluster) -> float:
    """Exposed ring-attention traffic of one layer (forward + backward), context parallel c > 1.

    Each of the c − 1 ring steps passes a K and V chunk (b · s/c · kv_dim/t elements each)
    forward; backward passes K, V and their gradients. The transfers run under the attention
    kernels of the other chunks (Megatron-LM / Transformer Engine ring attention).
    """
    if e.cp == 1:
        return 0.0
    kv_local = max(1.0, shape.kv_heads / shape.t) * shape.head_dim
    chunk = 2 * shape.elem_bytes * shape.b * shape.s * kv_local  # K and V
    fabric = comms.group_fabric(cluster, groups.cp)
    fwd = (e.cp - 1) * comms.p2p_time(chunk, fabric)
    bwd = 2 * fwd
    return (comms.overlapped(fwd, lt.attn_core_fwd, groups.cp)
            + comms.overlapped(bwd, lt.attn_core_bwd, groups.cp))


# ------------------------------------------------------------------------------------ the model
def estimate(workload: Workload, cluster: Cluster, execution: Execution) -> Estimate:
    split = check(workload, execution, cluster)
    cfg, e = workload.model, execution
    m = micro_batches(workload, e)
    elem = ELEM_BYTES[e.precision]
    dev = Device.of(cluster.acc, e.precision, fp8=e.fp8, attention=e.attention)
    sp = e.sequence_parallel and e.tp > 1
    groups = comms.layout(cluster, e.tp, e.dp, e.pp, e.cp, e.dp_shard)
    state = StateBytes.of(e.precision, e.grad_dtype)

    shape = LayerShape.of(cfg, micro_batch=e.micro_batch, seq_len=workload.seq_len, tp=e.tp, sp=sp,
                          flash=e.attention != "eager", elem_bytes=elem, cp=e.cp, fp8=e.fp8,
                          eager=e.elementwise == "eager")
    lt = layer_times(dev, shape)
    act_bytes = elem * shape.tokens * cfg.d_model  # one full activation tensor (the TP collective size)
    tp_fwd, tp_bwd = _tp_collectives(e, lt, groups, cluster, act_bytes)
    frac = e.recompute_fraction if e.recompute == "full" else 1.0
    rec_compute, rec_comm = {"full": (lt.fwd, tp_fwd), "selective": (lt.attn_core_fwd, 0.0),
                             "none": (0.0, 0.0)}[e.recompute]
    per_layer = {
        "compute": lt.fwd + lt.bwd,
        "recompute": frac * rec_compute,
        "tp_comm": tp_fwd + tp_bwd + frac * rec_comm,
        "cp_comm": _cp_exchange(e, lt, shape, groups, cluster),
    }
    if not e.grad_accum_fusion and e.zero <= 1:
        layer_params = device_params(cfg, e.tp, 1, False, False)  # one layer's, per device
        per_layer["compute"] += mem_time(dev, layer_params * (elem + 2 * state.grads))
    stages = _stage_times(cfg, e, dev, shape, split, per_layer, cluster, groups, act_bytes)
    totals = [sum(x.values()) for x in stages]
    crit = stages[max(range(len(stages)), key=lambda i: totals[i])]
    bubble = (e.pp - 1) / e.interleave * (sum(totals) / len(totals))

    layers = split.device_layers
    big = max(range(e.pp), key=lambda i: device_params(cfg, e.tp, layers[i], i == 0, i == e.pp - 1))
    params_dev = device_params(cfg, e.tp, layers[big], big == 0, big == e.pp - 1)
    windows = {"last_bwd": layers[big] * (lt.bwd + frac * rec_compute), "fwd": layers[big] * lt.fwd}
    dp_time = _dp_time(e, m, params_dev, state, elem, groups, cluster, layers[big], windows)
    time = TimeBreakdown(
        compute=m * crit["compute"], recompute=m * crit["recompute"], tp_comm=m * crit["tp_comm"],
        cp_comm=m * crit["cp_comm"], pp_p2p=m * crit["pp_p2p"], pp_bubble=bubble, dp_comm=dp_time,
        optimizer=_optimizer_time(cfg, e, cluster, dev, state, params_dev))

    memory = memory_breakdown(
        cfg, seq_len=workload.seq_len, tp=e.tp, pp=e.pp, dp=e.dp, micro_batch=e.micro_batch,
        interleave=e.interleave, micro_batches=m, sequence_parallel=sp, flash=e.attention != "eager",
        recompute=e.recompute, zero=e.zero, elem_bytes=elem, state=state,
        runtime_bytes=cluster.acc.runtime_overhead_gib * 2**30, capacity_bytes=cluster.acc.memory_bytes,
        device_layers=layers, cp=e.cp, shard_degree=e.shard_degree, recompute_fraction=e.recompute_fraction)
    batch = effective_batch(workload, e)
    tokens = batch * workload.seq_len
    model_flops = flops_per_token(cfg, workload.seq_len) * tokens
    rec_flops = recompute_flops_per_token(cfg, workload.seq_len, e.recompute) * (frac if e.recompute == "full" else 1)
    layer_state = device_params(cfg, e.tp, layers[0], False, False) * (state.weights + state.grads + state.optimizer)
    return Estimate(
        workload=workload, execution=e, cluster=cluster, memory=memory, time=time, micro_batches=m,
        global_batch=batch, split=split, model_flops_per_step=model_flops,
        hardware_flops_per_step=model_flops + rec_flops * tokens,
        layer_weights_gib=layer_state / 2**30, layer_activations_gib=memory.activations / 2**30,
        extras={"stage_times_s": totals, "layer_fwd_s": lt.fwd, "layer_bwd_s": lt.bwd})


def _stage_times(cfg: ModelConfig, e: Execution, dev: Device, shape: LayerShape, split: StageSplit,
                 per_layer: dict[str, float], cluster: Cluster, groups: comms.Groups,
                 act_bytes: float) -> list[dict[str, float]]:
    """Seconds per micro-batch of every pipeline stage, by kind."""
    emb = embedding_times(dev, tokens=shape.tokens, h=cfg.d_model, elem_bytes=shape.elem_bytes)
    head = output_head_times(dev, tokens=shape.tokens, h=cfg.d_model, vocab=cfg.require_vocab(), t=e.tp,
                             elem_bytes=shape.elem_bytes)
    # Pipeline send/receive: one activation forward and one gradient backward per chunk boundary;
    # with sequence parallelism (or Megatron's scatter-gather) each rank sends its 1/t shard.
    p2p_bytes = act_bytes / e.tp
    p2p = 2 * e.interleave * comms.p2p_time(p2p_bytes, comms.pp_fabric(cluster, groups)) if e.pp > 1 else 0.0
    out = []
    for i, n_layers in enumerate(split.device_layers):
        edge = (emb.fwd + emb.bwd if i == 0 else 0.0) + (head.fwd + head.bwd if i == e.pp - 1 else 0.0)
        stage = {k: n_layers * v for k, v in per_layer.items()}
        stage["compute"] += edge
        stage["pp_p2p"] = p2p
        out.append(stage)
    return out


def _dp_time(e: Execution, m: int, params_dev: float, state: StateBytes, elem: int, groups: comms.Groups,
             cluster: Cluster, layers: int, windows: dict[str, float]) -> float:
    """Exposed data-parallel communication per step: gradient sync and ZeRO weight gathers.

    ZeRO-0 all-reduces gradients over the c·d ranks holding the same weights. ZeRO-1/2/3
    reduce-scatter them over the shard group (ZeRO-2/3 every micro-batch, their gradients being
    sharded) and all-reduce the 1/shard piece across HSDP replicas; ZeRO-1/2 then all-gather the
    updated weights (Megatron's distributed optimizer; behind the next forward with overlap),
    ZeRO-3 gathers each layer's weights before forward and backward (and recompute).
    """
    if groups.dp.size == 1:
        return 0.0
    grad_bytes = params_dev * state.grads
    weight_bytes = params_dev * elem
    buckets = max(1, math.ceil(grad_bytes / DDP_BUCKET_BYTES))
    pieces_per_mb = max(1, layers)

    def coll(kind: str, nbytes: float, pieces: int, group: comms.Group) -> float:
        # Frameworks issue one collective per bucket (DDP) or per layer (FSDP/ZeRO-3): each pays
        # the ring latency, which matters on thousands of ranks.
        return pieces * comms.collective_time(kind, nbytes / pieces, group, cluster)

    shard, rep = groups.shard, groups.replicate
    across = coll(comms.ALL_REDUCE, grad_bytes / shard.size, buckets, rep)
    if e.zero == 0:
        sync, pieces, window = coll(comms.ALL_REDUCE, grad_bytes, buckets, groups.dp), buckets, windows["last_bwd"]
    elif e.zero == 1:
        sync, pieces, window = coll(comms.REDUCE_SCATTER, grad_bytes, buckets, shard) + across, buckets, \
            windows["last_bwd"]
    else:
        sync = m * coll(comms.REDUCE_SCATTER, grad_bytes, pieces_per_mb, shard) + across
        pieces, window = m * pieces_per_mb, m * windows["last_bwd"]
    # The last piece waits for the last backward; the rest runs under it when overlapped.
    total = comms.overlapped(sync, window, groups.dp) + sync / pieces if e.dp_overlap else sync
    if e.zero in (1, 2) and shard.size > 1:
        gather = coll(comms.ALL_GATHER, weight_bytes, buckets, shard)
        total += comms.overlapped(gather, windows["fwd"], shard) + gather / buckets if e.dp_overlap else gather
    if e.zero == 3 and shard.size > 1:  # prefetched one layer ahead
        gathers = 3 if e.recompute == "full" else 2
        gather = gathers * m * coll(comms.ALL_GATHER, weight_bytes, pieces_per_mb, shard)
        window = m * (windows["fwd"] + windows["last_bwd"])
        total += comms.overlapped(gather, window, shard) + gather / (pieces_per_mb * m * gathers) \
            if e.dp_overlap else gather
    return total


def _optimizer_time(cfg: ModelConfig, e: Execution, cluster: Cluster, dev: Device, state: StateBytes,
                    params_dev: float) -> float:
    fused = e.fused_optimizer if e.fused_optimizer is not None else cluster.acc.kind != "cpu"
    opt_params = params_dev / e.shard_degree if e.zero >= 1 else params_dev
    if fused:
        per_param = 2 * state.optimizer + state.grads + 2 * state.weights + FUSED_ADAM_EXTRA
    else:
        per_param = UNFUSED_ADAM_BYTES_FP32 * (state.optimizer + state.weights + state.grads) / 16
    # Kernels: a fused optimizer runs a few multi-tensor launches; PyTorch's per-tensor loop runs
    # ≈ 10 element-wise kernels (AdamW's 8 passes, norm and clip) for every parameter tensor.
    kernels = 20 if fused else UNFUSED_ADAM_KERNELS * param_tensors(cfg) / e.pp
    return opt_params * per_param / dev.mem_bytes_per_s + kernels * dev.kernel_s


def comm_bytes_per_step(workload: Workload, execution: Execution) -> dict[str, float]:
    """Bytes each rank sends per optimizer step, by parallelism (ring algorithms).

    dp: DDP all-reduce of the gradients (2(n−1)/n · G), or with ZeRO-2/3 a reduce-scatter per
        micro-batch ((n−1)/n · G each) plus, for ZeRO-3, two weight all-gathers per micro-batch
        (three with full recompute), and for ZeRO-1 one reduce-scatter of gradients and one
        all-gather of the updated weights;
    tp: the Megatron collectives on b·s·h activations per layer and micro-batch;
    pp: activation forward + gradient backward per micro-batch and chunk boundary.
    Gradient bytes G use the execution's gradient dtype; weights its compute precision.
    """
    cfg, e = workload.model, execution
    t, p, d = e.tp, e.pp, e.dp
    m = micro_batches(workload, e)
    elem = ELEM_BYTES[e.precision]
    state = StateBytes.of(e.precision, e.grad_dtype)
    sp_params = stage_params(cfg, t, p)
    params = max(sp_params.first, sp_params.last)
    grads, weights = params * state.grads, params * elem
    ring = (d - 1) / d if d > 1 else 0.0
    dp = {0: 2 * ring * grads, 1: ring * grads + ring * weights}.get(e.zero, m * ring * grads)
    if e.zero == 2:
        dp += ring * weights
    if e.zero == 3:
        dp += (3 if e.recompute == "full" else 2) * m * ring * weights
    act = elem * e.micro_batch * workload.seq_len // e.cp * cfg.d_model
    tp_ring = (t - 1) / t if t > 1 else 0.0
    per_layer = (2 * 2 + (2 if e.recompute == "full" else 0)) * 2 * tp_ring * act  # all-reduces
    if e.sequence_parallel and t > 1:  # all-gathers + reduce-scatters, same volume, plus the AG redo
        per_layer += (0 if e.recompute == "full" else 2) * tp_ring * act
    tp_bytes = m * (cfg.n_layer // p) * per_layer
    pp_bytes = m * 2 * e.interleave * (act / t if t > 1 else act) if p > 1 else 0.0
    return {"dp": dp, "tp": tp_bytes, "pp": pp_bytes}
