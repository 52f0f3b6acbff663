"""What clusterlm's trainer can run: the planner's `Execution` ↔ the trainer's `ParallelPlan`.

This module is the one place where the two vocabularies meet. `plan --search` keeps only the
layouts `trainer_plan` accepts, `plan --emit` writes the run-config keys of `run_sections`,
`launch` turns a run config back into an `Execution` (`execution_from_plan`) to check its memory
against a cluster spec, and `plan --model run.yaml` reads a run config's layout with
`defaults_from_run_config`.

    planner (Execution)                    trainer (`parallel:` / `train:` keys → ParallelPlan)
    t                                      parallel.tp  (sequence parallel: always on with tp > 1)
    p, v, stage split                      parallel.pp, pp_virtual_stages, pp_stage_layers
    m = micro-batches per replica          grad_accum = m; pp_schedule interleaved_1f1b when v > 1,
                                           else 1f1b when m ≥ p, else gpipe (the same m in flight)
    d with ZeRO 0                          dp_replicate = d, dp_shard = 1 (DDP; FSDP2-replicated
                                           when t or p > 1, which DDP cannot wrap)
    d with ZeRO 2 / 3, shard group N       dp_shard = N (default d), dp_replicate = d / N;
                                           ZeRO-2 = fsdp_reshard_after_forward: never
    b                                      train.micro_batch
    m · d · b                              train.batch_size
    recompute full                         train.activation_checkpointing: true
    precision                              train.precision

Priced by the planner but not run by the trainer, each with the reason `not_executable` gives:
ZeRO-1 (sharded optimizer state under replicated weights: FSDP2 has no such mode), context
parallelism, FP8 GEMMs, selective or partial recomputation (the trainer recomputes whole
blocks), tensor parallelism without sequence parallelism, and anything `ParallelPlan.check`
refuses (tp not dividing the key/value heads, fp16 with FSDP/TP/PP, pipeline stages with tied
embeddings, a micro-batch count the schedule cannot run, …).
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterlm.cluster.workload import Execution, Workload, micro_batches
from clusterlm.config.parallel import ParallelPlan
from clusterlm.config.pipeline import split_layers
from clusterlm.config.run import RunConfig
from clusterlm.errors import ConfigError, DistributedError


@dataclass(frozen=True)
class TrainerLayout:
    """An executable plan: the trainer's `ParallelPlan` and the precision it trains in."""

    plan: ParallelPlan
    precision: str
    seq_len: int

    def parallel_section(self) -> dict:
        """The `parallel:` keys of a run config."""
        p = self.plan
        out: dict = {"dp_replicate": p.dp_replicate, "dp_shard": p.dp_shard, "tp": p.tp, "pp": p.pp}
        if p.pp > 1:
            out.update(pp_schedule=p.pp_schedule, pp_virtual_stages=p.interleave)
            if p.stage_layers is not None:
                out["pp_stage_layers"] = list(p.stage_layers)
        if p.fsdp_reshard_after_forward != "default":
            out["fsdp_reshard_after_forward"] = p.fsdp_reshard_after_forward
        return out

    def train_section(self) -> dict:
        """The `train:` keys of a run config that the layout decides."""
        p = self.plan
        return {"seq_len": self.seq_len, "micro_batch": p.micro_batch, "batch_size": p.global_batch(),
                "precision": self.precision, "activation_checkpointing": p.recompute == "full"}


def _unsupported(e: Execution) -> list[str]:
    """Features the planner prices that clusterlm's trainer does not implement."""
    reasons = []
    if e.cp > 1:
        reasons.append(f"context parallelism (c={e.cp}) is not implemented (no ring attention)")
    if e.fp8:
        reasons.append("FP8 GEMMs are not implemented (fp32, bf16 or fp16)")
    if e.zero == 1 and e.dp > 1:
        reasons.append("ZeRO-1: FSDP2 shards the weights too; use --zero 2 or 3")
    if e.recompute == "selective":
        reasons.append("selective recompute: the trainer recomputes whole blocks (--recompute full) or none")
    if e.recompute == "full" and e.recompute_fraction < 1:
        reasons.append(f"recomputing {e.recompute_fraction:g} of the layers: the trainer recomputes all or none")
    if e.tp > 1 and not e.sequence_parallel:
        reasons.append(f"t={e.tp} without --sequence-parallel: the trainer's tensor parallelism always splits "
                       "the norms along the sequence")
    return reasons


def _schedule(e: Execution, m: int) -> str:
    if e.interleave > 1:
        return "interleaved_1f1b"
    return "1f1b" if m >= e.pp else "gpipe"  # fewer micro-batches than stages: both hold all m


def trainer_layout(workload: Workload, e: Execution) -> TrainerLayout:
    """The trainer's validated layout for `e`, or ConfigError saying why clusterlm cannot run it."""
    reasons = _unsupported(e)
    if reasons:
        raise ConfigError("; ".join(reasons))
    model, m = workload.model, micro_batches(workload, e)
    dp_shard = (e.dp_shard or e.dp) if e.zero >= 2 else 1
    stage_layers = None
    if e.pp > 1:  # the trainer splits by the same rule; pass the planner's split only where it differs
        planned = split_layers(model.n_layer, e.pp, e.interleave, e.pipeline_split, e.stage_layers)
        if planned.chunks != split_layers(model.n_layer, e.pp, e.interleave).chunks:
            stage_layers = planned.chunks
    plan = ParallelPlan(dp_replicate=e.dp // dp_shard, dp_shard=dp_shard, tp=e.tp, pp=e.pp,
                        micro_batch=e.micro_batch, grad_accum=m, interleave=e.interleave,
                        recompute="full" if e.recompute == "full" else "none",
                        fsdp_reshard_after_forward="never" if e.zero == 2 and dp_shard > 1 else "default",
                        pp_schedule=_schedule(e, m) if e.pp > 1 else "1f1b", stage_layers=stage_layers)
    try:
        plan.check(model, workload.seq_len, e.precision)
    except (ConfigError, DistributedError) as exc:
        raise ConfigError(str(exc)) from None
    return TrainerLayout(plan, e.precision, workload.seq_len)


def not_executable(workload: Workload, e: Execution) -> str | None:
    """Why clusterlm's trainer cannot run `e` (None: it can)."""
    try:
        trainer_layout(workload, e)
    except ConfigError as exc:
        return str(exc)
    return None


def execution_from_plan(plan: ParallelPlan, precision: str) -> Execution:
    """The planner's view of a trainer layout (the inverse of `trainer_layout`)."""
    sharded = plan.fsdp and plan.dp_shard > 1
    return Execution(tp=plan.tp, pp=plan.pp, dp=plan.dp,
                     dp_shard=plan.dp_shard if sharded and plan.dp_replicate > 1 else None,
                     micro_batch=plan.micro_batch, interleave=plan.interleave, sequence_parallel=plan.tp > 1,
                     recompute=plan.recompute, zero=plan.zero_stage if sharded else 0,
                     stage_layers=plan.stage_layers, precision=precision)


def defaults_from_run_config(run_cfg: RunConfig) -> dict:
    """The plan settings a run config implies (its `train:` and `parallel:` sections), before the
    world size is known (`parallel.dp_shard: -1` means FSDP over whatever data parallelism is left)."""
    tr, par = run_cfg.train, run_cfg.parallel
    hsdp = par.dp_replicate > 1 and par.dp_shard > 1
    sharded = par.dp_shard != 1
    zero = (2 if par.fsdp_reshard_after_forward == "never" else 3) if sharded else 0
    return {"seq_len": tr.seq_len, "micro_batch": tr.micro_batch, "batch": tr.batch_size,
            "batch_per_replica": tr.micro_batch * tr.grad_accum,
            "recompute": "full" if tr.activation_checkpointing else "none",
            "precision": tr.precision if tr.precision != "auto" else None,
            "parallel": {"tp": par.tp, "pp": par.pp}, "interleave": par.pp_virtual_stages,
            "sequence_parallel": par.tp > 1,  # the trainer's tensor parallelism always splits the norms
            "stage_layers": tuple(par.pp_stage_layers) if par.pp_stage_layers else None,
            "zero": zero, "dp_shard": par.dp_shard if hsdp else None}
