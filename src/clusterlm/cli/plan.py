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

from clusterlm.cli.common import positive_int


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
    group.add_argument("--dp-overlap", action=argparse.BooleanOptionalAction, default=None,
                       help="overlap gradient sync and ZeRO weight gathers with compute (default: on; off on "
                            "CPUs, where gloo runs the collectives on the cores that compute)")
    group.add_argument("--grad-accum-fusion", action=argparse.BooleanOptionalAction, default=True,
                       help="weight-gradient GEMMs accumulate in place (Megatron-LM since late 2021; default on)")


def run(args: argparse.Namespace) -> int:
    from clusterlm.api import plan as api

    if args.validate:
        return _validate(args, api)
    from clusterlm.cluster.request import from_namespace

    result = api.plan(from_namespace(args), search=args.search, top=args.top, chart=args.chart, emit=args.emit,
                      overwrite=args.overwrite)
    if args.json:
        print(json.dumps(api.to_json(result), indent=2))
    else:
        _print_plan(args, result)
    return 0 if result.fits else 1


def _print_plan(args, result) -> None:
    from rich.console import Console

    from clusterlm.cluster.report import not_executable_table, plan_tables, search_table
    from clusterlm.model.flops import param_count

    console = Console()
    workload, cluster, bands, s = result.workload, result.cluster, result.bands, result.search
    cfg = workload.model
    console.print(f"[bold]{cfg.preset or 'model'}[/bold]: {param_count(cfg) / 1e9:,.2f} B parameters, "
                  f"seq {workload.seq_len}, global batch {workload.global_batch} on {cluster.name}: "
                  f"{cluster.num_gpus} × {cluster.acc.display}")
    if s is not None:
        title = (f"top layouts clusterlm runs ({s.fitting} of {s.evaluated} evaluated fit in memory and are "
                 "executable)" if s.ranked else f"no executable layout fits ({s.evaluated} evaluated); closest:")
        console.print(search_table(result.shown, title))
        if s.not_executable:
            console.print(not_executable_table(s.not_executable, f"not executable by clusterlm ({s.not_executable_fitting} "
                                                                  "fit in memory; fastest shown)"))
    best = result.best or (result.shown[0] if result.shown else None)
    if best is None:
        return
    console.print(f"[bold]plan[/bold]: {best.execution.describe()}, precision {best.execution.precision}")
    if result.reason is not None:
        console.print(f"[yellow]not executable by clusterlm: {result.reason}[/yellow]")
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
    if result.chart:
        console.print(f"chart: {result.chart}")
    if result.emitted:
        console.print(f"emitted config and launch scripts: {result.emitted}")


def _validate(args: argparse.Namespace, api) -> int:
    if args.json:
        print(json.dumps(api.validation_json(), indent=2))
        return 0
    from rich.console import Console

    from clusterlm.cluster import validation
    from clusterlm.cluster.report import validation_report

    validation_report(Console(), validation.rows())
    return 0
