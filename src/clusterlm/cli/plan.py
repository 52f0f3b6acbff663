"""Predict memory, step time, throughput, MFU, duration, energy, cost and checkpoint I/O of a run.

MODEL is a preset (gpt3-175B, megatron-530B, llama3-405B, gpt2-124M, …), a YAML file (a model
config, or a whole run config whose train.seq_len, micro-batch, batch size and recompute setting
become the defaults), and/or model.KEY=VALUE overrides (a model without a preset: give its shape
as overrides alone). SPEC is a cluster preset (dgx-a100-superpod, dgx-h100, dgx-b200,
meta-h100-roce, jean-zay-a100, tpu-v4-pod-slice, tpu-v5p-slice, local) or a cluster YAML, e.g.
one written by `clusterlm cluster probe --out`. Every prediction carries a ±1σ range: the RMS of
the errors on published runs the planner was not fitted to (`--validate`).

Examples:
  clusterlm plan --model gpt3-175B --cluster dgx-a100-superpod --gpus 1024 --batch 1536 --seq 2048 \\
      --parallel t=8,p=8 --recompute selective --sequence-parallel --tokens 300e9
  clusterlm plan --model llama3-405B --cluster meta-h100-roce --gpus 16384 --batch 2048 --seq 8192 \\
      --parallel t=8,p=16 --interleave 4 --sequence-parallel --zero 1     # 126 layers: 7,8,…,8,7 split
  clusterlm plan --model llama3-8B --cluster dgx-h100 --gpus 8 --batch 128 --seq 8192 --zero 3 --fp8
  clusterlm plan --cluster jean-zay-a100 --gpus 384 --batch 2048 --seq 2048 --parallel t=4,p=12 \\
      --batch-rampup 192,16,9765625 --tokens 366e9 model.n_layer=70 model.d_model=14336 model.n_head=112 \\
      model.vocab_size=250880
  clusterlm plan --validate          # predicted vs published: held-out runs first, then calibration
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from clusterlm.cli.common import positive_int
from clusterlm.errors import OutputExistsError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="model.KEY=VALUE",
                        help="model overrides (model.n_layer=70 model.vocab_size=250880 …)")
    parser.add_argument("--model", help="model preset name or model/run config YAML")
    parser.add_argument("--cluster", help="cluster preset name or cluster spec YAML")
    parser.add_argument("--gpus", type=positive_int, help="scale the cluster to N accelerators (whole nodes)")
    run_len = parser.add_mutually_exclusive_group()
    run_len.add_argument("--tokens", help="training tokens for the whole run (e.g. 300e9, 15T, 2B)")
    run_len.add_argument("--steps", type=positive_int, help="optimizer steps for the whole run")
    parser.add_argument("--batch", type=positive_int, help="global batch in sequences per optimizer step (default: one "
                        "micro-batch per data-parallel rank)")
    parser.add_argument("--seq", type=positive_int, help="sequence length in tokens")
    _layout_arguments(parser.add_argument_group("layout"))
    _stack_arguments(parser.add_argument_group("numerics and software"))
    parser.add_argument("--vocab", type=positive_int, help="vocabulary size when the model config leaves it unset")
    parser.add_argument("--search", action="store_true", help="search all valid layouts, rank by throughput")
    parser.add_argument("--top", type=positive_int, default=5, help="layouts to show with --search (default 5)")
    parser.add_argument("--chart", help="write the memory/time breakdown chart (PNG) here")
    parser.add_argument("--emit", metavar="DIR", help="write a training config, launch and sbatch scripts for the plan")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --emit DIR")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--validate", action="store_true",
                        help="predicted vs published runs (held-out first), each with the command reproducing it")


def _layout_arguments(group) -> None:
    group.add_argument("--parallel", help="degrees t=,c=,p=,d= (tensor, context, pipeline, data; missing d "
                                          "is filled from --gpus), also b= micro-batch and v= interleave")
    group.add_argument("--micro-batch", type=positive_int, help="sequences per micro-batch (default 1)")
    group.add_argument("--interleave", type=positive_int, default=1, help="virtual pipeline chunks per device (default 1)")
    group.add_argument("--stage-layers", help="layers per virtual pipeline stage, e.g. 7,8,8,7 (p·v entries; "
                                              "first/last may be 0)")
    group.add_argument("--pipeline-split", choices=["auto", "even", "balanced"], default="auto",
                       help="even: L/(p·v) each; balanced: embedding and loss count as one layer each (the "
                            "first and last stage hold one layer fewer); auto (default): even if it divides")
    group.add_argument("--recompute", choices=["none", "selective", "full"], help="activation recomputation")
    group.add_argument("--recompute-fraction", type=float, default=1.0,
                       help="with --recompute full: share of the layers recomputed (default 1)")
    group.add_argument("--sequence-parallel", action="store_true", help="sequence parallelism with t > 1")
    group.add_argument("--zero", type=int, choices=[0, 1, 2, 3], help="ZeRO stage (1: distributed optimizer, "
                                                                      "3: FSDP), default 0")
    group.add_argument("--dp-shard", type=positive_int, help="ZeRO/FSDP shard group size within d (HSDP: d/N replicas)")
    group.add_argument("--batch-rounding", choices=["nearest", "up", "down", "exact"], default="nearest",
                       help="when d·b does not divide --batch: round micro-batches per replica (the trained "
                            "batch is reported), or refuse (exact)")
    group.add_argument("--batch-rampup", metavar="START,INC,SAMPLES",
                       help="batch ramp-up counted in --tokens totals (Megatron --rampup-batch-size)")


def _stack_arguments(group) -> None:
    group.add_argument("--precision", choices=["bf16", "fp16", "fp32"],
                       help="compute precision (default: fp32 on CPUs, bf16 otherwise)")
    group.add_argument("--grad-dtype", choices=["bf16", "fp32"], help="gradient buffer precision (default bf16)")
    group.add_argument("--fp8", action="store_true", help="transformer-layer GEMMs in FP8 (Hopper/Blackwell)")
    group.add_argument("--attention", choices=["flash", "flash3", "eager"], default="flash",
                       help="FlashAttention-2-class (default), Hopper FlashAttention-3/cuDNN, or materialised scores")
    group.add_argument("--elementwise", choices=["fused", "eager"], default="fused",
                       help="norm/activation/RoPE kernels: fused (Megatron, TE, compile) or eager PyTorch")
    group.add_argument("--tp-overlap", action="store_true", help="hide backward TP collectives behind GEMMs")
    group.add_argument("--dp-overlap", action=argparse.BooleanOptionalAction, default=True,
                       help="overlap gradient sync and ZeRO weight gathers with compute (default on)")
    group.add_argument("--grad-accum-fusion", action=argparse.BooleanOptionalAction, default=True,
                       help="weight-gradient GEMMs accumulate in place (Megatron-LM since late 2021; default on)")


def run(args: argparse.Namespace) -> int:
    if args.validate:
        return _validate(args)
    from clusterlm.cluster import planner, request, validation
    from clusterlm.cluster.estimator import estimate

    resolved = request.resolve(request.from_namespace(args), search=args.search)
    workload, cluster = resolved.workload, resolved.cluster
    if args.search:
        result = planner.search(workload, cluster, resolved.execution, top=max(1, args.top))
        best = result.ranked[0] if result.ranked else None
        shown = result.ranked or ([result.closest] if result.closest else [])
    else:
        best = estimate(workload, cluster, resolved.execution)
        shown = [best]
        result = None
    bands = validation.bands()
    chart = args.chart or (str(Path(args.emit) / "plan.png") if args.emit else None)
    if args.search and chart is None:
        chart = "plan.png"
    if args.emit and best is not None:
        emit(best, args.emit, resolved.base_run, overwrite=args.overwrite)
    if chart and shown:
        from clusterlm.cluster.report import plan_chart

        plan_chart(shown, chart, bands)
    if args.json:
        payload = planner.to_json(best if best is not None else shown[0], bands)
        if result is not None:
            payload["search"] = {"evaluated": result.evaluated, "fitting": result.fitting,
                                 "ranked": [planner.to_json(e, bands) for e in result.ranked]}
        print(json.dumps(payload, indent=2, default=_json_default))
        return 0 if best is not None and best.fits else 1
    _print_plan(args, workload, cluster, best, shown, result, chart, bands)
    return 0 if best is not None and best.fits else 1


def _json_default(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    raise TypeError(type(obj).__name__)


def _print_plan(args, workload, cluster, best, shown, result, chart, bands) -> None:
    from rich.console import Console

    from clusterlm.cluster.report import plan_tables, search_table
    from clusterlm.model.flops import param_count

    console = Console()
    cfg = workload.model
    console.print(f"[bold]{cfg.preset or 'model'}[/bold]: {param_count(cfg) / 1e9:,.2f} B parameters, "
                  f"seq {workload.seq_len}, global batch {workload.global_batch} on {cluster.name}: "
                  f"{cluster.num_gpus} × {cluster.acc.display}")
    if result is not None:
        title = (f"top layouts ({result.fitting} of {result.evaluated} evaluated fit in memory)"
                 if result.ranked else f"no layout fits ({result.evaluated} evaluated); closest:")
        console.print(search_table(shown, title))
    if best is None:
        best = shown[0] if shown else None
        if best is None:
            return
    console.print(f"[bold]plan[/bold]: {best.execution.describe()}, precision {best.execution.precision}")
    if best.global_batch != workload.global_batch:
        console.print(f"[yellow]batch {workload.global_batch} is not a multiple of d·b = "
                      f"{best.execution.dp * best.execution.micro_batch}: {best.micro_batches} micro-batches per "
                      f"replica train {best.global_batch} sequences per step[/yellow]")
    if best.execution.pp > 1:
        console.print(f"pipeline stages ({best.split.rule}): layers per virtual stage {best.split.describe()}")
    for table in plan_tables(best, bands):
        console.print(table)
    if not best.fits:
        console.print(f"[red]does not fit: {best.memory.total / 2**30:,.1f} GiB needed, "
                      f"{best.memory.capacity / 2**30:,.0f} GiB per accelerator[/red]; try --recompute full, "
                      "--zero 3, more pipeline stages, a smaller --micro-batch, or --search")
    if chart:
        console.print(f"chart: {chart}")
    if args.emit:
        console.print(f"emitted config and launch scripts: {args.emit}")


def run_config_from_plan(est, base_run=None) -> dict:
    """A `RunConfig` (as a dict) that trains the planned model with the planned layout."""
    from clusterlm.cluster.totals import run_totals
    from clusterlm.config.base import validate
    from clusterlm.config.run import RunConfig

    e, wl = est.execution, est.workload
    data = base_run.model_dump(mode="json") if base_run is not None else {}
    run_steps = run_totals(est).steps
    steps = math.ceil(run_steps) if run_steps is not None else data.get("train", {}).get("max_steps", 1000)
    train = dict(data.get("train", {}))
    train.update({"seq_len": wl.seq_len, "micro_batch": e.micro_batch, "batch_size": est.global_batch,
                  "max_steps": int(steps), "precision": e.precision,
                  # The trainer recomputes whole blocks; selective recompute maps to none (with fused
                  # attention it stores the same tensors).
                  "activation_checkpointing": e.recompute == "full"})
    train.pop("grad_accum", None)
    if train.get("warmup_steps", 50) >= train["max_steps"]:
        train["warmup_steps"] = max(0, train["max_steps"] // 10)
    shard = e.dp_shard or e.dp if e.zero >= 1 else 1
    parallel = {"tp": e.tp, "pp": e.pp, "dp_shard": shard, "dp_replicate": e.dp // shard}
    out = {**data, "model": wl.model.model_dump(mode="json", exclude_none=True), "train": train, "parallel": parallel}
    validate(RunConfig, out)  # what we write must load
    return out


def emit(est, directory: str, base_run=None, overwrite: bool = False) -> Path:
    """Write config.yaml, plan.json, launch.sh (torchrun) and job.sbatch (Slurm) into `directory`."""
    import yaml

    from clusterlm.cluster.planner import to_json
    from clusterlm.distributed.launch import LaunchSpec, sbatch_script, shell_join, torchrun_commands
    from clusterlm.fsio import atomic_dir

    out = Path(directory)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    cfg = run_config_from_plan(est, base_run)
    n = est.num_gpus
    gpn = min(est.cluster.gpus_per_node, n)
    nodes = math.ceil(n / gpn)
    days = (est.step_time_s * cfg["train"]["max_steps"]) / 86400
    hours = min(max(1, math.ceil(days * 24 * 1.2)), 24 * 14)  # 20 % margin, capped at two weeks
    time_limit = f"{hours // 24}-{hours % 24:02d}:00:00" if hours >= 24 else f"{hours:02d}:00:00"
    spec = LaunchSpec(config="config.yaml", nodes=nodes, gpus_per_node=gpn, time_limit=time_limit,
                      use_gpus=est.cluster.acc.kind == "gpu", job_name="clusterlm-plan")
    cmds = torchrun_commands(spec)
    launch = ["#!/bin/bash", "# Run on every node (identical command; c10d assigns node ranks).",
              "# Set the rendezvous endpoint to the first node's address before running.", "set -euo pipefail",
              'cd "$(dirname "$0")"', shell_join(cmds[0]), ""]
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        (tmp / "plan.json").write_text(json.dumps(to_json(est), indent=2, default=_json_default) + "\n",
                                       encoding="utf-8")
        (tmp / "launch.sh").write_text("\n".join(launch), encoding="utf-8")
        (tmp / "job.sbatch").write_text(sbatch_script(spec), encoding="utf-8")
        for script in ("launch.sh", "job.sbatch"):
            (tmp / script).chmod(0o755)
    return out


def _validate(args: argparse.Namespace) -> int:
    from clusterlm.cluster import validation

    rows = validation.rows()
    if args.json:
        print(json.dumps({"summary": validation.summary(), "bands": validation.bands(),
                          "rows": [validation.row_json(r) for r in rows]}, indent=2))
        return 0
    from rich.console import Console

    from clusterlm.cluster.report import validation_report

    validation_report(Console(), rows)
    return 0
