"""Parallel layouts: the `parallel:` config section and the resolved `ParallelPlan`.

    world = pp × dp_replicate × dp_shard × tp        (dp_shard = -1 takes what is left)

`ParallelConfig` is what a run config states (degrees plus process-group and communication
knobs). `ParallelPlan` is one complete, validated layout for a world size: degrees with nothing
left to infer, micro-batch, accumulation, recompute, interleaving. It is the one type that
`clusterlm plan` searches and emits, that `clusterlm launch` checks before any process starts,
and that `clusterlm train` runs; `ParallelPlan.check` is the one validator all three call.

Ranks are laid out row-major over ("pp", "dp_replicate", "dp_shard", "tp"): tensor parallel is
innermost (neighbouring ranks, the fastest links), data parallel outside it, pipeline stages
outermost — the layout of Megatron-LM and torchtitan, and the one `clusterlm.cluster.comms`
assumes when it prices a plan.

Pipeline stages get whole layers by the planner's rule (`config/pipeline.py`): an even split
when the stages divide the layers, otherwise a balanced one with the embedding and the output
head counted as one layer each, so 126 layers on 16 stages are 7, 8, …, 8, 7;
`parallel.pp_stage_layers` gives an explicit split instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import ConfigDict, Field

from clusterlm.config import limits as L
from clusterlm.config.base import Section
from clusterlm.config.model import ModelConfig
from clusterlm.config.pipeline import split_layers
from clusterlm.errors import DistributedError

MESH_DIMS = ("pp", "dp_replicate", "dp_shard", "tp")
PP_SCHEDULES = ("gpipe", "1f1b", "interleaved_1f1b")


class ParallelConfig(Section):
    model_config = ConfigDict(allow_inf_nan=False)  # every number has a range (config/limits.py)

    dp_replicate: int = Field(default=1, ge=1, le=L.MAX_DEGREE)  # DDP replicas (HSDP replicas when combined with dp_shard/tp)
    dp_shard: int = Field(default=-1, ge=-1, le=L.MAX_DEGREE)  # FSDP2 shards; -1 = whatever is left of the world
    tp: int = Field(default=1, ge=1, le=L.MAX_DEGREE)  # DTensor tensor parallel (with sequence parallel on norms)
    pp: int = Field(default=1, ge=1, le=L.MAX_DEGREE)  # pipeline-parallel ranks (torch.distributed.pipelining)
    # Pipeline schedule; interleaved_1f1b runs pp_virtual_stages stages per rank (the planner's v).
    pp_schedule: Literal["gpipe", "1f1b", "interleaved_1f1b"] = "1f1b"
    pp_virtual_stages: int = Field(default=1, ge=1, le=L.MAX_LAYERS)
    pp_stage_layers: list[int] | None = None  # layers per stage (pp × virtual stages entries); None: the rule

    # --- process group
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: NCCL on CUDA GPUs, gloo on CPU
    timeout_s: float = Field(default=600.0, gt=0, le=L.MAX_TIMEOUT_S)  # a collective that waits longer fails the run

    # --- DDP (dp_replicate only)
    ddp_bucket_mb: float = Field(default=25.0, gt=0, le=1e6)  # gradients all-reduced per bucket (PyTorch default 25)
    # Gradients cast to 16 bits for the all-reduce (half the bytes), summed, cast back.
    grad_compression: Literal["none", "bf16", "fp16"] = "none"

    # --- FSDP2 (dp_shard)
    # Free the gathered weights after each block's forward (ZeRO-3, re-gathered in backward)
    # or keep them until backward (ZeRO-2-like: one all-gather per micro-batch fewer, more memory).
    # default: yes, except the last block group, which backward needs first anyway.
    fsdp_reshard_after_forward: Literal["default", "always", "never"] = "default"
    # Blocks whose all-gather is issued ahead of use: 0 keeps FSDP2's implicit one-ahead
    # prefetch, n > 0 sets explicit forward/backward prefetch lists n blocks deep.
    fsdp_prefetch: int = Field(default=0, ge=0, le=L.MAX_LAYERS)
    # FSDP2 MixedPrecisionPolicy: dtype of the gathered weights (auto: train.precision when it
    # is bf16/fp16, else fp32) and of the gradient reduce-scatter.
    fsdp_param_dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    fsdp_reduce_dtype: Literal["fp32", "bf16"] = "fp32"

    # --- measurement and checkpoints
    comm_stats: bool = True  # time and count every collective; logged per step in metrics.jsonl
    async_checkpoint: bool = False  # torch.distributed.checkpoint.async_save for periodic checkpoints


@dataclass(frozen=True)
class ParallelPlan:
    """One layout for `world_size` ranks, with every degree resolved."""

    dp_replicate: int = 1
    dp_shard: int = 1
    tp: int = 1
    pp: int = 1
    micro_batch: int = 1  # sequences per micro-batch per data-parallel rank
    grad_accum: int = 1  # micro-batches per optimizer step per rank
    interleave: int = 1  # virtual pipeline stages per rank
    recompute: str = "none"  # none | full (activation checkpointing of whole blocks)
    fsdp_reshard_after_forward: str = "default"
    pp_schedule: str = "1f1b"
    stage_layers: tuple[int, ...] | None = None  # explicit layers per stage (pp · interleave entries)

    @classmethod
    def resolve(cls, cfg: ParallelConfig, world_size: int, *, micro_batch: int = 1,
                recompute: str = "none") -> ParallelPlan:
        """Resolve `dp_shard = -1` and check the degrees multiply to `world_size` (grad_accum stays 1:
        it depends on the data-parallel degree resolved here; see `config.run.parallel_plan`)."""
        if world_size < 1:
            raise DistributedError(f"world size must be ≥ 1, got {world_size}")
        fixed = cfg.dp_replicate * cfg.tp * cfg.pp
        degrees = f"dp_replicate {cfg.dp_replicate} × dp_shard {cfg.dp_shard} × tp {cfg.tp} × pp {cfg.pp}"
        if cfg.dp_shard == -1:
            if world_size % fixed:
                raise DistributedError(
                    f"parallel degrees {degrees}: world size {world_size} is not divisible by "
                    f"dp_replicate × tp × pp = {fixed}; choose degrees whose product divides {world_size}"
                )
            dp_shard = world_size // fixed
        elif cfg.dp_shard == 0:
            raise DistributedError("parallel.dp_shard must be ≥ 1, or -1 to use the rest of the world")
        else:
            dp_shard = cfg.dp_shard
            if fixed * dp_shard != world_size:
                raise DistributedError(
                    f"parallel degrees {degrees} multiply to {fixed * dp_shard}, but the world size is "
                    f"{world_size}; make the product equal {world_size} (or set parallel.dp_shard=-1 "
                    "to fill the rest)"
                )
        stage_layers = tuple(cfg.pp_stage_layers) if cfg.pp_stage_layers is not None else None
        plan = cls(cfg.dp_replicate, dp_shard, cfg.tp, cfg.pp, micro_batch=micro_batch,
                   interleave=cfg.pp_virtual_stages, recompute=recompute,
                   fsdp_reshard_after_forward=cfg.fsdp_reshard_after_forward, pp_schedule=cfg.pp_schedule,
                   stage_layers=stage_layers)
        if cfg.grad_compression != "none" and not plan.ddp:
            raise DistributedError(
                f"parallel.grad_compression={cfg.grad_compression} compresses DDP's all-reduce, but these degrees "
                f"({plan.describe()}) use FSDP2; set parallel.fsdp_reduce_dtype=bf16 instead"
            )
        return plan

    # ----------------------------------------------------------------- derived
    @property
    def world_size(self) -> int:
        return self.dp_replicate * self.dp_shard * self.tp * self.pp

    @property
    def dp(self) -> int:
        """Data-parallel ranks: each reads its own slice of the global batch."""
        return self.dp_replicate * self.dp_shard

    @property
    def fsdp(self) -> bool:
        """Parameters are FSDP2-managed: sharded (dp_shard > 1), or HSDP-replicated alongside tensor or
        pipeline parallelism (whose modules are built on the meta device, which DDP cannot wrap)."""
        return self.dp_shard > 1 or (self.dp_replicate > 1 and (self.tp > 1 or self.pp > 1))

    @property
    def ddp(self) -> bool:
        """Plain replicated data parallel (torch DDP): only dp_replicate is > 1."""
        return self.dp_replicate > 1 and not self.fsdp

    @property
    def sharded(self) -> bool:
        """Some rank holds only part of the weights: checkpoints must go through DCP."""
        return self.dp_shard > 1 or self.tp > 1 or self.pp > 1

    @property
    def zero_stage(self) -> int:
        """The ZeRO stage this layout amounts to: 3 = FSDP (2 when weights stay gathered), 0 = DDP."""
        if not self.fsdp:
            return 0
        return 2 if self.fsdp_reshard_after_forward == "never" else 3

    def global_batch(self) -> int:
        """Sequences per optimizer step over all data-parallel ranks."""
        return self.micro_batch * self.grad_accum * self.dp

    @property
    def stages(self) -> int:
        """Pipeline stages in all (virtual stages included)."""
        return self.pp * self.interleave

    def describe(self) -> str:
        parts = [f"{name}={getattr(self, name)}" for name in MESH_DIMS if getattr(self, name) > 1]
        if self.pp > 1:
            parts.append(f"({self.pp_schedule}" + (f", v={self.interleave})" if self.interleave > 1 else ")"))
        return " ".join(parts) or "single process"

    def coordinates(self, rank: int) -> dict[str, int]:
        """This rank's index along each mesh dimension (row-major: pp outermost, tp innermost)."""
        tp_rank = rank % self.tp
        shard_rank = (rank // self.tp) % self.dp_shard
        replicate_rank = (rank // (self.tp * self.dp_shard)) % self.dp_replicate
        pp_rank = rank // (self.tp * self.dp_shard * self.dp_replicate)
        return {"pp": pp_rank, "dp_replicate": replicate_rank, "dp_shard": shard_rank, "tp": tp_rank}

    def layers_per_stage(self, n_layer: int) -> tuple[int, ...]:
        return split_layers(n_layer, self.pp, self.interleave, explicit=self.stage_layers).chunks

    def dp_rank(self, rank: int) -> int:
        """Position of `rank` among the data-parallel ranks (its loader shard)."""
        c = self.coordinates(rank)
        return c["dp_replicate"] * self.dp_shard + c["dp_shard"]

    # ----------------------------------------------------------------- the validator
    def check(self, model: ModelConfig, seq_len: int, precision: str = "fp32") -> ParallelPlan:
        """Everything about this layout that can be checked before any process starts."""
        self.check_model(model, seq_len)
        self.check_pipeline(model)
        if self.recompute not in ("none", "full"):  # the planner's "selective" has no trainer implementation
            raise DistributedError(f"recompute must be none or full (train.activation_checkpointing), "
                                   f"got {self.recompute!r}")
        if precision == "fp16" and (self.fsdp or self.tp > 1 or self.pp > 1):
            raise DistributedError(
                f"train.precision=fp16 with {self.describe()}: fp16 needs a gradient scaler that sees every "
                "shard, which FSDP2/tensor parallel runs here do not have; use bf16 (or fp32)"
            )
        return self

    def check_pipeline(self, model: ModelConfig) -> None:
        """Pipeline stages get whole layers; each schedule has its own micro-batch rule."""
        if self.pp == 1:
            if self.interleave > 1 or self.stage_layers is not None:
                raise DistributedError("parallel.pp_virtual_stages / pp_stage_layers need parallel.pp > 1")
            return
        if not model.is_transformer:
            raise DistributedError(f"parallel.pp={self.pp} splits a transformer's layers; a {model.style} model "
                                   "can only use data parallelism (set parallel.pp=1)")
        if model.tie_embeddings:
            raise DistributedError(f"parallel.pp={self.pp}: the embedding (first stage) and the output head (last "
                                   "stage) cannot share one tensor; set model.tie_embeddings=false")
        if self.pp_schedule not in PP_SCHEDULES:
            raise DistributedError(f"parallel.pp_schedule must be one of {', '.join(PP_SCHEDULES)}")
        if (self.interleave > 1) != (self.pp_schedule == "interleaved_1f1b"):
            raise DistributedError("parallel.pp_schedule=interleaved_1f1b goes with parallel.pp_virtual_stages ≥ 2 "
                                   "(and the other schedules with 1)")
        self.layers_per_stage(model.n_layer)
        m = self.grad_accum  # micro-batches per step: the planner's m
        if self.pp_schedule == "1f1b" and m < self.pp:
            raise DistributedError(f"1F1B needs at least as many micro-batches as stages: {m} < pp={self.pp}; "
                                   "raise train.batch_size or train.grad_accum (or use parallel.pp_schedule=gpipe)")
        if self.pp_schedule == "interleaved_1f1b" and m % max(1, m // self.pp):
            raise DistributedError(f"interleaved 1F1B needs the micro-batches per step ({m}) to be a multiple of "
                                   f"{max(1, m // self.pp)} (rounds of pp={self.pp}); change train.grad_accum")

    def check_model(self, model: ModelConfig, seq_len: int) -> None:
        """Tensor parallelism splits heads, FFN columns and the sequence (sequence parallel)."""
        if self.tp == 1:
            return
        if not model.is_transformer:
            raise DistributedError(
                f"parallel.tp={self.tp} needs a transformer (model.style gpt2 or llama); "
                f"a {model.style} model can only use data parallelism (set parallel.tp=1)"
            )
        problems = [
            (model.n_head, "model.n_head (attention heads)"),
            (model.kv_heads, "model.n_kv_head (key/value heads)"),
            (model.ffn_dim, "model.d_ff (feed-forward width)"),
            (seq_len, "train.seq_len (sequence parallel splits it)"),
        ]
        for value, name in problems:
            if value % self.tp:
                raise DistributedError(
                    f"parallel.tp={self.tp} does not divide {name} = {value}; choose a tp that divides it "
                    f"(e.g. {_largest_divisor(value, self.tp)}) or change {name.split()[0]}"
                )


def _largest_divisor(value: int, limit: int) -> int:
    return max(d for d in range(1, limit + 1) if value % d == 0)
