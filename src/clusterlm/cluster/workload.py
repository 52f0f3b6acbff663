"""What the planner is asked about: a workload (model, sequence, batch, run length) and one
execution (parallel layout plus the numerics and software switches it runs with).

`Execution` keeps two kinds of field apart. The *layout* — degrees, micro-batch, interleaving,
stage split, recomputation, ZeRO stage — is what a training run's parallel plan holds; the
*numerics and software switches* (precision, FP8, attention kernel, overlap, fusions) describe the
stack a run uses and change only its speed. `check()` refuses what cannot run, with a message
that says what to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clusterlm.cluster.memory import RECOMPUTE_MODES
from clusterlm.config.pipeline import StageSplit, split_layers
from clusterlm.cluster.spec import Cluster
from clusterlm.errors import ConfigError
from clusterlm.config.model import ModelConfig

PRECISIONS = ("bf16", "fp16", "fp32")
ELEM_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
ATTENTION_KERNELS = ("flash", "flash3", "eager")
ELEMENTWISE = ("fused", "eager")
BATCH_ROUNDING = ("nearest", "up", "down", "exact")


@dataclass(frozen=True)
class Workload:
    model: ModelConfig
    seq_len: int
    global_batch: int  # sequences per optimizer step (requested; see `micro_batches`)
    total_tokens: float | None = None  # run length (else `steps`)
    steps: int | None = None
    # Megatron-style batch ramp-up (--rampup-batch-size): start, increment, samples over which
    # the batch grows to `global_batch`. Counted in run totals only.
    batch_rampup: tuple[int, int, int] | None = None
    # How a batch that d·b does not divide becomes whole micro-batches per replica.
    batch_rounding: str = "nearest"


@dataclass(frozen=True)
class Execution:
    # ---- layout (the parallel plan a training run holds)
    tp: int = 1
    pp: int = 1
    dp: int = 1
    cp: int = 1  # context parallel: each sequence split over cp ranks (ring attention)
    dp_shard: int | None = None  # ZeRO/FSDP sharding group within d; None = all d (HSDP when < d)
    micro_batch: int = 1
    interleave: int = 1  # virtual pipeline chunks per device
    sequence_parallel: bool = False
    recompute: str = "none"  # none | selective | full
    recompute_fraction: float = 1.0  # share of layers recomputed when recompute == "full"
    zero: int = 0  # 0 (DDP) | 1 | 2 | 3 (FSDP)
    pipeline_split: str = "auto"  # auto | even | balanced (pipeline.py)
    stage_layers: tuple[int, ...] | None = None  # explicit layers per virtual stage
    # ---- numerics and kernels
    precision: str = "bf16"
    grad_dtype: str | None = None  # "fp32": fp32 gradient accumulation buffers (Megatron-LM)
    fp8: bool = False  # transformer-layer GEMMs in FP8 (Transformer Engine / torchao float8)
    attention: str = "flash"  # flash (FA2-class) | flash3 (Hopper FA3/cuDNN) | eager (s×s scores)
    elementwise: str = "fused"  # fused (Megatron/TE/Apex/compile) | eager (PyTorch operator by operator)
    # ---- software efficiency switches
    tp_overlap: bool = False  # hide backward TP collectives behind independent GEMMs
    dp_overlap: bool = True  # overlap gradient sync (and ZeRO weight gathers) with compute
    fused_optimizer: bool | None = None  # None: fused on accelerators, PyTorch's loop on CPUs
    # Weight-gradient GEMMs accumulate straight into the gradient buffer (Megatron-LM's
    # --gradient-accumulation-fusion, from late 2021). False: every micro-batch writes a fresh
    # gradient and an element-wise kernel adds it into the (possibly fp32) buffer.
    grad_accum_fusion: bool = True

    @property
    def num_gpus(self) -> int:
        return self.tp * self.cp * self.pp * self.dp

    @property
    def shard_degree(self) -> int:
        """Ranks that ZeRO/FSDP shards state over: the shard group times the context ranks."""
        return self.cp * (self.dp_shard or self.dp)

    def describe(self) -> str:
        parts = [f"t={self.tp}", f"p={self.pp}", f"d={self.dp}"]
        if self.cp > 1:
            parts.append(f"c={self.cp}")
        parts.append(f"b={self.micro_batch}")
        if self.interleave > 1:
            parts.append(f"v={self.interleave}")
        rec = self.recompute if self.recompute_fraction == 1.0 else f"{self.recompute}×{self.recompute_fraction:g}"
        parts += [f"recompute={rec}", f"zero={self.zero}"]
        if self.dp_shard and self.dp_shard != self.dp:
            parts.append(f"shard={self.dp_shard}")
        if self.sequence_parallel:
            parts.append("sp")
        if self.fp8:
            parts.append("fp8")
        return " ".join(parts)


def micro_batches(workload: Workload, execution: Execution) -> int:
    """Micro-batches per replica and step: B/(d·b), rounded by the workload's rule (≥ 1)."""
    per_round = execution.dp * execution.micro_batch
    exact = workload.global_batch / per_round
    rule = workload.batch_rounding
    if rule == "exact":
        if workload.global_batch % per_round:
            raise ConfigError(f"global batch ({workload.global_batch}) is not divisible by d·b = "
                              f"{execution.dp}·{execution.micro_batch} = {per_round} (or use "
                              "--batch-rounding nearest to round per-replica batches)")
        return workload.global_batch // per_round
    m = {"nearest": math.floor(exact + 0.5), "up": math.ceil(exact), "down": math.floor(exact)}[rule]
    return max(1, m)


def effective_batch(workload: Workload, execution: Execution) -> int:
    """Sequences per step actually trained after rounding: m·d·b."""
    return micro_batches(workload, execution) * execution.dp * execution.micro_batch


def check(workload: Workload, execution: Execution, cluster: Cluster | None = None) -> StageSplit:
    """Raise ConfigError for layouts that cannot run; return the pipeline stage split."""
    cfg, e = workload.model, execution
    if not cfg.is_transformer:
        raise ConfigError(f"the planner models transformers; model style '{cfg.style}' is not one")
    for name in ("tp", "pp", "dp", "cp", "micro_batch", "interleave"):
        if getattr(e, name) < 1:
            raise ConfigError(f"{name} must be ≥ 1, got {getattr(e, name)}")
    _check_choices(workload, e)
    if cfg.n_head % e.tp:
        raise ConfigError(f"attention heads ({cfg.n_head}) are not divisible by tensor parallel t={e.tp}")
    if cfg.kv_heads % e.tp and e.tp % cfg.kv_heads:
        raise ConfigError(f"key/value heads ({cfg.kv_heads}) and tensor parallel t={e.tp} must divide one another")
    if cfg.ffn_dim % e.tp:
        raise ConfigError(f"FFN width ({cfg.ffn_dim}) is not divisible by tensor parallel t={e.tp}")
    if e.interleave > 1 and e.pp == 1:
        raise ConfigError("interleaving (v > 1) needs pipeline parallelism (p > 1)")
    split = split_layers(cfg.n_layer, e.pp, e.interleave, e.pipeline_split, e.stage_layers)
    micro_batches(workload, e)  # ConfigError for an indivisible batch under --batch-rounding exact
    if workload.seq_len > cfg.max_seq_len and cfg.style == "gpt2":
        raise ConfigError(f"sequence length {workload.seq_len} exceeds the model's learned positions "
                          f"(max_seq_len {cfg.max_seq_len})")
    if workload.seq_len % e.cp:
        raise ConfigError(f"context parallel needs seq_len ({workload.seq_len}) divisible by c={e.cp}")
    if e.sequence_parallel and (workload.seq_len // e.cp) % e.tp:
        raise ConfigError(f"sequence parallel needs seq_len/c ({workload.seq_len // e.cp}) divisible by t={e.tp}")
    if e.dp_shard is not None:
        if e.dp % e.dp_shard:
            raise ConfigError(f"--dp-shard {e.dp_shard} must divide the data-parallel degree d={e.dp}")
        if e.zero == 0:
            raise ConfigError("--dp-shard needs ZeRO/FSDP sharding (--zero 1, 2 or 3)")
    if cluster is not None:
        _check_cluster(e, cluster)
    return split


def _check_choices(workload: Workload, e: Execution) -> None:
    if e.recompute not in RECOMPUTE_MODES:
        raise ConfigError(f"recompute must be one of {', '.join(RECOMPUTE_MODES)}, got '{e.recompute}'")
    if not 0 < e.recompute_fraction <= 1:
        raise ConfigError(f"--recompute-fraction must be in (0, 1], got {e.recompute_fraction}")
    if e.zero not in (0, 1, 2, 3):
        raise ConfigError(f"zero must be 0, 1, 2 or 3, got {e.zero}")
    if e.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{e.precision}'")
    if e.attention not in ATTENTION_KERNELS:
        raise ConfigError(f"attention must be one of {', '.join(ATTENTION_KERNELS)}, got '{e.attention}'")
    if e.elementwise not in ELEMENTWISE:
        raise ConfigError(f"elementwise kernels must be one of {', '.join(ELEMENTWISE)}, got '{e.elementwise}'")
    if workload.batch_rounding not in BATCH_ROUNDING:
        raise ConfigError(f"batch rounding must be one of {', '.join(BATCH_ROUNDING)}, "
                          f"got '{workload.batch_rounding}'")
    if e.fp8 and e.precision == "fp32":
        raise ConfigError("--fp8 runs GEMMs in FP8 inside bf16/fp16 training; use --precision bf16")


def _check_cluster(e: Execution, cluster: Cluster) -> None:
    n = e.num_gpus
    if n != cluster.num_gpus:
        cp = f"·{e.cp}" if e.cp > 1 else ""
        raise ConfigError(f"t·{'c·' if e.cp > 1 else ''}p·d = {e.tp}{cp}·{e.pp}·{e.dp} = {n} but the cluster has "
                          f"{cluster.num_gpus} accelerators (use --gpus or change the degrees)")
    acc = cluster.acc
    acc.peak_flops(e.precision)  # ConfigError if the part lacks the precision
    if e.fp8 and (acc.gemm_efficiency_fp8 is None or "fp8" not in acc.peak_tflops):
        raise ConfigError(f"accelerator '{acc.name}' has no FP8 tensor cores in the catalog; drop --fp8")
    if e.attention == "flash3" and acc.attention_efficiency_fa3 is None:
        raise ConfigError(f"--attention flash3 needs a Hopper-class part; '{acc.name}' has no FA3 kernel "
                          "(use --attention flash)")
