"""Predict one training configuration on a cluster: memory, step time, throughput, run totals.

`estimate(workload, cluster, execution)` is a pure function of three plain objects:

* `Workload`  — the model (`ModelConfig`, the same schema training uses), sequence length,
  global batch and run length;
* `Cluster`   — resolved hardware (`spec.py`);
* `Execution` — one parallel layout: t, p, d, micro-batch, interleaving, sequence parallel,
  recomputation, ZeRO stage, precision, attention kernel, overlap switches.

Step time (per optimizer step):

    T = m · t_max + (p − 1)/v · t_mean  +  exposed DP communication  +  optimizer step

where t_max / t_mean are the slowest / average pipeline stage's time per micro-batch (layers
forward + backward + recompute + exposed tensor-parallel communication + pipeline send/receive;
the first stage adds the embedding, the last the output layer and loss). With p = 1 this is
m · t_stage. Model FLOPs come from `clusterlm.model.flops` (PaLM convention), so a plan and a
training run's MFU use one definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from clusterlm.cluster import comms
from clusterlm.cluster.compute import (
    Device,
    LayerShape,
    embedding_times,
    layer_times,
    mem_time,
    output_head_times,
)
from clusterlm.cluster.memory import (
    RECOMPUTE_MODES,
    MemoryBreakdown,
    StateBytes,
    memory_breakdown,
    stage_params,
)
from clusterlm.cluster.spec import Cluster
from clusterlm.errors import ConfigError
from clusterlm.config.model import ModelConfig
from clusterlm.model.flops import flops_per_token, param_count, recompute_flops_per_token

PRECISIONS = ("bf16", "fp16", "fp32")
ELEM_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
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
class Workload:
    model: ModelConfig
    seq_len: int
    global_batch: int  # sequences per optimizer step
    total_tokens: float | None = None  # run length (else `steps`)
    steps: int | None = None

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    @property
    def run_steps(self) -> float | None:
        if self.steps is not None:
            return float(self.steps)
        if self.total_tokens is not None:
            return self.total_tokens / self.tokens_per_step
        return None


@dataclass(frozen=True)
class Execution:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    micro_batch: int = 1
    interleave: int = 1  # virtual pipeline chunks per device
    sequence_parallel: bool = False
    recompute: str = "none"  # none | selective | full
    zero: int = 0  # 0 (DDP) | 1 | 2 | 3 (FSDP)
    precision: str = "bf16"
    grad_dtype: str | None = None  # "fp32": fp32 gradient accumulation buffers (Megatron-LM)
    attention: str = "flash"  # flash (fused, causal) | eager (materialised s×s scores)
    tp_overlap: bool = False  # hide backward TP collectives behind independent GEMMs
    dp_overlap: bool = True  # overlap gradient sync with the last micro-batch's backward
    fused_optimizer: bool | None = None  # None: fused on accelerators, PyTorch's loop on CPUs
    # Weight-gradient GEMMs accumulate straight into the gradient buffer (Megatron-LM's
    # --gradient-accumulation-fusion, from late 2021). False: every micro-batch writes a fresh
    # gradient and an element-wise kernel adds it into the (possibly fp32) buffer.
    grad_accum_fusion: bool = True

    def describe(self) -> str:
        parts = [f"t={self.tp}", f"p={self.pp}", f"d={self.dp}", f"b={self.micro_batch}"]
        if self.interleave > 1:
            parts.append(f"v={self.interleave}")
        parts += [f"recompute={self.recompute}", f"zero={self.zero}"]
        if self.sequence_parallel:
            parts.append("sp")
        return " ".join(parts)


@dataclass(frozen=True)
class TimeBreakdown:
    """Seconds per optimizer step, attributed to what the slowest pipeline stage spends them on."""

    compute: float
    recompute: float
    tp_comm: float
    pp_p2p: float
    pp_bubble: float
    dp_comm: float  # exposed part only
    optimizer: float

    @property
    def total(self) -> float:
        return (self.compute + self.recompute + self.tp_comm + self.pp_p2p + self.pp_bubble + self.dp_comm
                + self.optimizer)

    def as_dict(self) -> dict[str, float]:
        return {"compute": self.compute, "recompute": self.recompute, "tp_comm": self.tp_comm,
                "pp_p2p": self.pp_p2p, "pp_bubble": self.pp_bubble, "dp_comm": self.dp_comm,
                "optimizer": self.optimizer, "total": self.total}


@dataclass(frozen=True)
class Estimate:
    workload: Workload
    execution: Execution
    cluster: Cluster
    memory: MemoryBreakdown
    time: TimeBreakdown
    micro_batches: int
    model_flops_per_step: float
    hardware_flops_per_step: float
    layer_weights_gib: float  # transformer-layer weights+grads+optimizer of one stage (Fig. 1 quantity)
    layer_activations_gib: float  # transformer-layer activations of the first stage
    extras: dict = field(default_factory=dict)

    @property
    def step_time_s(self) -> float:
        return self.time.total

    @property
    def num_gpus(self) -> int:
        e = self.execution
        return e.tp * e.pp * e.dp

    @property
    def tokens_per_s(self) -> float:
        return self.workload.tokens_per_step / self.step_time_s

    @property
    def model_tflops_per_gpu(self) -> float:
        return self.model_flops_per_step / self.step_time_s / self.num_gpus / 1e12

    @property
    def hardware_tflops_per_gpu(self) -> float:
        return self.hardware_flops_per_step / self.step_time_s / self.num_gpus / 1e12

    @property
    def mfu(self) -> float:
        peak = self.cluster.acc.peak_flops(self.execution.precision)
        return self.model_tflops_per_gpu * 1e12 / peak

    @property
    def fits(self) -> bool:
        return self.memory.fits


# ------------------------------------------------------------------------------------ validation
def check(workload: Workload, execution: Execution, cluster: Cluster | None = None) -> None:
    """Raise ConfigError for layouts that cannot run (the messages say what to change)."""
    cfg, e = workload.model, execution
    if not cfg.is_transformer:
        raise ConfigError(f"the planner models transformers; model style '{cfg.style}' is not one")
    for name in ("tp", "pp", "dp", "micro_batch", "interleave"):
        if getattr(e, name) < 1:
            raise ConfigError(f"{name} must be ≥ 1, got {getattr(e, name)}")
    if e.recompute not in RECOMPUTE_MODES:
        raise ConfigError(f"recompute must be one of {', '.join(RECOMPUTE_MODES)}, got '{e.recompute}'")
    if e.zero not in (0, 1, 2, 3):
        raise ConfigError(f"zero must be 0, 1, 2 or 3, got {e.zero}")
    if e.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{e.precision}'")
    if e.attention not in ("flash", "eager"):
        raise ConfigError(f"attention must be 'flash' or 'eager', got '{e.attention}'")
    if cfg.n_head % e.tp:
        raise ConfigError(f"attention heads ({cfg.n_head}) are not divisible by tensor parallel t={e.tp}")
    if cfg.kv_heads % e.tp and e.tp % cfg.kv_heads:
        raise ConfigError(f"key/value heads ({cfg.kv_heads}) and tensor parallel t={e.tp} must divide one another")
    if cfg.ffn_dim % e.tp:
        raise ConfigError(f"FFN width ({cfg.ffn_dim}) is not divisible by tensor parallel t={e.tp}")
    if cfg.n_layer % (e.pp * e.interleave):
        what = f"p·v={e.pp}·{e.interleave}" if e.interleave > 1 else f"p={e.pp}"
        raise ConfigError(f"layers ({cfg.n_layer}) are not divisible by pipeline stages {what}")
    if e.interleave > 1 and e.pp == 1:
        raise ConfigError("interleaving (v > 1) needs pipeline parallelism (p > 1)")
    if workload.global_batch % (e.dp * e.micro_batch):
        raise ConfigError(f"global batch ({workload.global_batch}) is not divisible by d·b = "
                          f"{e.dp}·{e.micro_batch} = {e.dp * e.micro_batch}")
    if workload.seq_len > cfg.max_seq_len and cfg.style == "gpt2":
        raise ConfigError(f"sequence length {workload.seq_len} exceeds the model's learned positions "
                          f"(max_seq_len {cfg.max_seq_len})")
    if e.sequence_parallel and workload.seq_len % e.tp:
        raise ConfigError(f"sequence parallel needs seq_len ({workload.seq_len}) divisible by t={e.tp}")
    if cluster is not None:
        n = e.tp * e.pp * e.dp
        if n != cluster.num_gpus:
            raise ConfigError(f"t·p·d = {e.tp}·{e.pp}·{e.dp} = {n} but the cluster has {cluster.num_gpus} "
                              "accelerators (use --gpus or change the degrees)")
        cluster.acc.peak_flops(e.precision)  # ConfigError if the part lacks the precision


# ------------------------------------------------------------------------------------ the model
def estimate(workload: Workload, cluster: Cluster, execution: Execution) -> Estimate:
    check(workload, execution, cluster)
    cfg, e = workload.model, execution
    t, p, d, b, v = e.tp, e.pp, e.dp, e.micro_batch, e.interleave
    s, L = workload.seq_len, cfg.n_layer
    m = workload.global_batch // (d * b)
    elem = ELEM_BYTES[e.precision]
    dev = Device.of(cluster.acc, e.precision)
    flash = e.attention == "flash"
    sp = e.sequence_parallel and t > 1
    groups = comms.layout(cluster, t, d, p)
    V = cfg.require_vocab()

    # ---- one layer, one micro-batch, one device
    shape = LayerShape.of(cfg, micro_batch=b, seq_len=s, tp=t, sp=sp, flash=flash, elem_bytes=elem)
    lt = layer_times(dev, shape)
    act_bytes = elem * b * s * cfg.d_model  # one full activation tensor (the TP collective size)

    def tp_coll(kind: str) -> float:
        return comms.collective_time(kind, act_bytes, groups.tp, cluster)

    ar, ag, rs = tp_coll(comms.ALL_REDUCE), tp_coll(comms.ALL_GATHER), tp_coll(comms.REDUCE_SCATTER)

    def hidden(comm: float, behind: float) -> float:
        return comms.overlapped(comm, behind, groups.tp) if e.tp_overlap else comm

    if t == 1:
        tp_fwd = tp_bwd = 0.0
    elif sp:
        tp_fwd = 2 * ag + 2 * rs
        # Backward: all-gathers for the row-parallel layers' output grads (needed at once),
        # reduce-scatters of input grads (overlappable with weight-gradient GEMMs) and, unless the
        # forward is recomputed, a second all-gather of the sharded norm output (Megatron keeps
        # only the 1/t shard).
        redo = 0.0 if e.recompute == "full" else hidden(ag, lt.qkv_gemm) + hidden(ag, lt.fc1_gemm)
        tp_bwd = 2 * ag + hidden(rs, lt.qkv_gemm) + hidden(rs, lt.fc1_gemm) + redo
    else:
        tp_fwd = 2 * ar
        tp_bwd = hidden(ar, lt.qkv_gemm) + hidden(ar, lt.fc1_gemm)
    if e.recompute == "full":
        rec_compute, rec_comm = lt.fwd, tp_fwd
    elif e.recompute == "selective":
        rec_compute, rec_comm = lt.attn_core_fwd, 0.0
    else:
        rec_compute = rec_comm = 0.0

    layers_per_stage = L // p
    layer_compute = lt.fwd + lt.bwd
    state = StateBytes.of(e.precision, e.grad_dtype)
    if not e.grad_accum_fusion and e.zero <= 1:
        layer_params = stage_params(cfg, t, 1).layers_only / L
        layer_compute += mem_time(dev, layer_params * (elem + 2 * state.grads))
    emb = embedding_times(dev, tokens=b * s, h=cfg.d_model, elem_bytes=elem)
    head = output_head_times(dev, tokens=b * s, h=cfg.d_model, vocab=V, t=t, elem_bytes=elem)
    # Pipeline send/receive: one activation forward and one gradient backward per chunk boundary;
    # with sequence parallelism (or Megatron's scatter-gather) each rank sends its 1/t shard.
    p2p_bytes = act_bytes / t if (sp or t > 1) else act_bytes
    p2p = 2 * v * comms.p2p_time(p2p_bytes, comms.pp_fabric(cluster, groups)) if p > 1 else 0.0

    def stage(edge_compute: float) -> dict[str, float]:
        return {
            "compute": layers_per_stage * layer_compute + edge_compute,
            "recompute": layers_per_stage * rec_compute,
            "tp_comm": layers_per_stage * (tp_fwd + tp_bwd + rec_comm),
            "pp_p2p": p2p,
        }

    if p == 1:
        stages = [stage(emb.fwd + emb.bwd + head.fwd + head.bwd)]
    else:
        stages = [stage(emb.fwd + emb.bwd), stage(0.0), stage(head.fwd + head.bwd)]
    stage_totals = [sum(x.values()) for x in stages]
    crit = stages[max(range(len(stages)), key=lambda i: stage_totals[i])]
    if p == 1:
        t_mean = stage_totals[0]
    else:  # p − 2 middle stages, one first, one last
        t_mean = (stage_totals[0] + (p - 2) * stage_totals[1] + stage_totals[2]) / p
    bubble = (p - 1) / v * t_mean

    # ---- data parallel: gradient sync, ZeRO gathers, optimizer
    sp_params = stage_params(cfg, t, p)
    params_dev = max(sp_params.first, sp_params.last)
    grad_bytes = params_dev * state.grads
    weight_bytes = params_dev * elem
    dp_time = 0.0
    last_bwd = layers_per_stage * (lt.bwd + rec_compute)  # backward of one micro-batch on a stage
    if d > 1:
        def dp_coll(kind: str, nbytes: float, pieces: int) -> float:
            # Frameworks issue one collective per bucket (DDP) or per layer (FSDP/ZeRO-3): each
            # pays the ring latency, which matters on thousands of ranks.
            return pieces * comms.collective_time(kind, nbytes / pieces, groups.dp, cluster)

        buckets = max(1, math.ceil(grad_bytes / DDP_BUCKET_BYTES))
        if e.zero <= 1:
            sync = dp_coll(comms.ALL_REDUCE, grad_bytes, buckets)
        else:  # ZeRO-2/3 reduce-scatter gradients every micro-batch (they are sharded)
            sync = m * dp_coll(comms.REDUCE_SCATTER, grad_bytes, layers_per_stage)
        if e.dp_overlap:
            last_piece = sync / (buckets if e.zero <= 1 else m * layers_per_stage)  # waits for the last backward
            window = last_bwd if e.zero <= 1 else m * last_bwd
            dp_time = comms.overlapped(sync, window, groups.dp) + last_piece
        else:
            dp_time = sync
        if e.zero in (1, 2):  # updated weight shards are all-gathered after the optimizer step
            dp_time += dp_coll(comms.ALL_GATHER, weight_bytes, buckets)
        if e.zero == 3:  # each layer's weights gathered before forward and backward (and recompute), prefetched
            gathers = 3 if e.recompute == "full" else 2
            gather = gathers * m * dp_coll(comms.ALL_GATHER, weight_bytes, layers_per_stage)
            window = m * layers_per_stage * (lt.fwd + lt.bwd + rec_compute)
            dp_time += comms.overlapped(gather, window, groups.dp) + gather / (layers_per_stage * m * gathers)

    fused = e.fused_optimizer if e.fused_optimizer is not None else cluster.acc.kind != "cpu"
    opt_params = params_dev / d if e.zero >= 1 else params_dev
    if fused:
        per_param = 2 * state.optimizer + state.grads + 2 * state.weights + FUSED_ADAM_EXTRA
    else:
        per_param = UNFUSED_ADAM_BYTES_FP32 * (state.optimizer + state.weights + state.grads) / 16
    # Kernels: a fused optimizer runs a few multi-tensor launches; PyTorch's per-tensor loop runs
    # ≈ 10 element-wise kernels (AdamW's 8 passes, norm and clip) for every parameter tensor.
    kernels = 20 if fused else UNFUSED_ADAM_KERNELS * param_tensors(cfg) / p
    opt_time = opt_params * per_param / dev.mem_bytes_per_s + kernels * dev.kernel_s

    time = TimeBreakdown(
        compute=m * crit["compute"],
        recompute=m * crit["recompute"],
        tp_comm=m * crit["tp_comm"],
        pp_p2p=m * crit["pp_p2p"],
        pp_bubble=bubble,
        dp_comm=dp_time,
        optimizer=opt_time,
    )

    memory = memory_breakdown(
        cfg, seq_len=s, tp=t, pp=p, dp=d, micro_batch=b, interleave=v, micro_batches=m, sequence_parallel=sp,
        flash=flash, recompute=e.recompute, zero=e.zero, elem_bytes=elem, state=state,
        runtime_bytes=cluster.acc.runtime_overhead_gib * 2**30, capacity_bytes=cluster.acc.memory_bytes)
    tokens = workload.tokens_per_step
    model_flops = flops_per_token(cfg, s) * tokens
    hw_flops = model_flops + recompute_flops_per_token(cfg, s, e.recompute) * tokens
    layer_state = sp_params.layers_only * (state.weights + state.grads + state.optimizer)
    return Estimate(
        workload=workload, execution=e, cluster=cluster, memory=memory, time=time, micro_batches=m,
        model_flops_per_step=model_flops, hardware_flops_per_step=hw_flops,
        layer_weights_gib=layer_state / 2**30,
        layer_activations_gib=memory.activations / 2**30,
        extras={"stage_times_s": stage_totals, "layer_fwd_s": lt.fwd, "layer_bwd_s": lt.bwd},
    )


def comm_bytes_per_step(workload: Workload, execution: Execution) -> dict[str, float]:
    """Bytes each rank sends per optimizer step, by parallelism (ring algorithms).

    dp: DDP all-reduce of the gradients (2(n−1)/n · G), or with ZeRO-2/3 a reduce-scatter per
        micro-batch ((n−1)/n · G each) plus, for ZeRO-3, two weight all-gathers per micro-batch
        (three with full recompute), and for ZeRO-1/2 one all-gather of the updated weights;
    tp: the Megatron collectives on b·s·h activations per layer and micro-batch;
    pp: activation forward + gradient backward per micro-batch and chunk boundary.
    Gradient bytes G use the execution's gradient dtype; weights its compute precision.
    """
    cfg, e = workload.model, execution
    t, p, d = e.tp, e.pp, e.dp
    m = workload.global_batch // (d * e.micro_batch)
    elem = ELEM_BYTES[e.precision]
    state = StateBytes.of(e.precision, e.grad_dtype)
    sp_params = stage_params(cfg, t, p)
    params = max(sp_params.first, sp_params.last)
    grads, weights = params * state.grads, params * elem
    ring = (d - 1) / d if d > 1 else 0.0
    if e.zero <= 1:
        dp = 2 * ring * grads
    else:
        dp = m * ring * grads
    if e.zero in (1, 2):
        dp += ring * weights
    if e.zero == 3:
        dp += (3 if e.recompute == "full" else 2) * m * ring * weights
    act = elem * e.micro_batch * workload.seq_len * cfg.d_model
    tp_ring = (t - 1) / t if t > 1 else 0.0
    per_layer = (2 * 2 + (2 if e.recompute == "full" else 0)) * 2 * tp_ring * act  # all-reduces
    if e.sequence_parallel and t > 1:  # all-gathers + reduce-scatters, same volume, plus the AG redo
        per_layer += (0 if e.recompute == "full" else 2) * tp_ring * act
    tp_bytes = m * (cfg.n_layer // p) * per_layer
    pp_bytes = m * 2 * e.interleave * (act / t if t > 1 else act) if p > 1 else 0.0
    return {"dp": dp, "tp": tp_bytes, "pp": pp_bytes}


@dataclass(frozen=True)
class RunTotals:
    """Whole-run figures derived from one step's estimate and the cluster's power, price, storage."""

    steps: float | None
    days: float | None
    gpu_hours: float | None
    energy_kwh: float | None
    cost: float | None
    checkpoint_gb: float  # weights + optimizer state (gradients are not saved), 1e9 bytes
    checkpoint_write_s: float
    checkpoint_restore_s: float
    data_read_gb_s: float  # token bandwidth training consumes
    storage_read_gb_s: float  # what the storage system delivers


def run_totals(est: Estimate) -> RunTotals:
    cl, wl = est.cluster, est.workload
    steps = wl.run_steps
    seconds = steps * est.step_time_s if steps is not None else None
    n = est.num_gpus
    nodes_used = max(1, math.ceil(n / cl.gpus_per_node))
    state = StateBytes.of(est.execution.precision, est.execution.grad_dtype)
    ckpt_bytes = param_count(wl.model) * (state.weights + state.optimizer)
    # Every node writes its shard in parallel, limited by its NICs and by the file system.
    nic_node = cl.nics_per_node * cl.net.port_gbit_s / 8 * 1e9 * cl.net.efficiency if cl.nodes > 1 else math.inf
    write_bw = min(cl.storage.write_gb_s * 1e9, nodes_used * nic_node)
    read_bw = min(cl.storage.read_gb_s * 1e9, nodes_used * nic_node)
    token_bytes = 2 if wl.model.require_vocab() <= 65535 else 4
    return RunTotals(
        steps=steps,
        days=seconds / 86400 if seconds is not None else None,
        gpu_hours=n * seconds / 3600 if seconds is not None else None,
        energy_kwh=(nodes_used * cl.node_power_w * (n / (nodes_used * cl.gpus_per_node)) * seconds / 3.6e6 * cl.pue
                    if seconds is not None else None),
        cost=(n * seconds / 3600 * cl.price_per_gpu_hour
              if seconds is not None and cl.price_per_gpu_hour is not None else None),
        checkpoint_gb=ckpt_bytes / 1e9,
        checkpoint_write_s=ckpt_bytes / write_bw,
        checkpoint_restore_s=ckpt_bytes / read_bw,
        data_read_gb_s=est.tokens_per_s * token_bytes / 1e9,
        storage_read_gb_s=cl.storage.read_gb_s,
    )
