"""Predict memory, step time, throughput, MFU, duration, energy, cost and checkpoint I/O of a run.

MODEL is a preset (gpt3-175B, megatron-530B, llama3-405B, gpt2-124M, …) or a YAML file: a model
config, or a whole run config (its train.seq_len, micro-batch, batch size and recompute setting
become the defaults). SPEC is a cluster preset (dgx-a100-superpod, dgx-h100, tpu-v4-pod-slice,
local) or a cluster YAML, e.g. one written by `clusterlm cluster probe --out`.

Examples:
  clusterlm plan --model gpt3-175B --cluster dgx-a100-superpod --gpus 1024 --batch 1536 --seq 2048 \\
      --parallel t=8,p=8 --recompute selective --sequence-parallel --tokens 300e9
  clusterlm plan --model llama3-405B --cluster dgx-h100 --gpus 16384 --batch 2048 --seq 8192 --search
  clusterlm plan --model run.yaml --cluster local.yaml --json
  clusterlm plan --validate          # predicted vs published Megatron-LM runs
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import replace
from pathlib import Path

from clusterlm.cli.common import positive_int
from clusterlm.errors import ConfigError, OutputExistsError, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model preset name or model/run config YAML")
    parser.add_argument("--cluster", help="cluster preset name or cluster spec YAML")
    parser.add_argument("--gpus", type=positive_int, help="scale the cluster to N accelerators (whole nodes)")
    run_len = parser.add_mutually_exclusive_group()
    run_len.add_argument("--tokens", help="training tokens for the whole run (e.g. 300e9, 15T, 2B)")
    run_len.add_argument("--steps", type=positive_int, help="optimizer steps for the whole run")
    parser.add_argument("--batch", type=positive_int, help="global batch in sequences per optimizer step (default: one "
                        "micro-batch per data-parallel rank)")
    parser.add_argument("--seq", type=positive_int, help="sequence length in tokens")
    parser.add_argument("--parallel", help="degrees, e.g. t=8,p=35,d=8 (missing d is filled from --gpus)")
    parser.add_argument("--micro-batch", type=positive_int, help="sequences per micro-batch (default 1)")
    parser.add_argument("--interleave", type=positive_int, default=1, help="virtual pipeline chunks per device (default 1)")
    parser.add_argument("--recompute", choices=["none", "selective", "full"], help="activation recomputation")
    parser.add_argument("--sequence-parallel", action="store_true", help="sequence parallelism with t > 1")
    parser.add_argument("--zero", type=int, choices=[0, 1, 2, 3], help="ZeRO stage (3 = FSDP), default 0")
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"],
                        help="compute precision (default: fp32 on CPUs, bf16 otherwise)")
    parser.add_argument("--grad-dtype", choices=["bf16", "fp32"], help="gradient buffer precision (default bf16)")
    parser.add_argument("--attention", choices=["flash", "eager"], default="flash",
                        help="fused (FlashAttention/SDPA) or materialised attention scores")
    parser.add_argument("--vocab", type=positive_int, help="vocabulary size when the model config leaves it unset")
    parser.add_argument("--search", action="store_true", help="search all valid layouts, rank by throughput")
    parser.add_argument("--top", type=positive_int, default=5, help="layouts to show with --search (default 5)")
    parser.add_argument("--chart", help="write the memory/time breakdown chart (PNG) here")
    parser.add_argument("--emit", metavar="DIR", help="write a training config, launch and sbatch scripts for the plan")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --emit DIR")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--validate", action="store_true",
                        help="print predicted vs published numbers (Korthikanti 2022, Narayanan 2021)")


def parse_tokens(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([KMBT]?)\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"--tokens: expected a number like 300e9, 2B or 15T, got '{text}'")
    scale = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[m.group(2).upper()]
    value = float(m.group(1)) * scale
    if value <= 0:
        raise UsageError("--tokens must be positive")
    return value


def run(args: argparse.Namespace) -> int:
    if args.validate:
        return _validate(args)
    if not args.model or not args.cluster:
        raise UsageError("--model and --cluster are required (or use --validate)")
    from clusterlm.cluster import planner
    from clusterlm.cluster.estimator import Execution, Workload, estimate
    from clusterlm.cluster.spec import load_cluster

    model, defaults, base_run = resolve_model(args.model, args.vocab)
    cluster = load_cluster(args.cluster, args.gpus)
    seq = args.seq or defaults.get("seq_len") or model.max_seq_len
    # Degrees: --parallel, else the run config's parallel section; the data-parallel degree is
    # what remains of the accelerators.
    given = planner.parse_parallel(args.parallel) if args.parallel else dict(defaults.get("parallel", {}))
    degrees = planner.complete_degrees(given, cluster.num_gpus)
    batch = args.batch or defaults.get("batch")
    if batch is None and defaults.get("batch_per_replica"):
        batch = defaults["batch_per_replica"] * (cluster.num_gpus if args.search else degrees["dp"])
    if batch is None:  # one micro-batch per data-parallel rank (per accelerator when searching)
        batch = cluster.num_gpus if args.search else degrees["dp"] * (args.micro_batch or 1)
    precision = args.precision or defaults.get("precision") or ("fp32" if cluster.acc.kind == "cpu" else "bf16")
    workload = Workload(model=model, seq_len=seq, global_batch=batch,
                        total_tokens=parse_tokens(args.tokens) if args.tokens else None, steps=args.steps)
    base = Execution(precision=precision, grad_dtype=args.grad_dtype, attention=args.attention,
                     interleave=args.interleave)
    if args.search:
        result = planner.search(workload, cluster, base, top=max(1, args.top))
        best = result.ranked[0] if result.ranked else None
        shown = result.ranked or ([result.closest] if result.closest else [])
    else:
        micro = degrees.pop("micro_batch", None) or args.micro_batch or defaults.get("micro_batch") or 1
        zero = args.zero if args.zero is not None else (defaults.get("zero", 0) if degrees["dp"] > 1 else 0)
        ex = replace(base, **degrees, micro_batch=micro,
                     recompute=args.recompute or defaults.get("recompute") or "none", zero=zero,
                     sequence_parallel=args.sequence_parallel)
        best = estimate(workload, cluster, ex)
        shown = [best]
        result = None
    chart = args.chart or (str(Path(args.emit) / "plan.png") if args.emit else None)
    if args.search and chart is None:
        chart = "plan.png"
    if args.emit and best is not None:
        emit(best, args.emit, base_run, overwrite=args.overwrite)
    if chart and shown:
        from clusterlm.cluster.report import plan_chart

        plan_chart(shown, chart)
    if args.json:
        payload = planner.to_json(best if best is not None else shown[0])
        if result is not None:
            payload["search"] = {"evaluated": result.evaluated, "fitting": result.fitting,
                                 "ranked": [planner.to_json(e) for e in result.ranked]}
        print(json.dumps(payload, indent=2, default=_json_default))
        return 0 if best is not None and best.fits else 1
    _print_plan(args, workload, cluster, best, shown, result, chart)
    return 0 if best is not None and best.fits else 1


def _json_default(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    raise TypeError(type(obj).__name__)


def _print_plan(args, workload, cluster, best, shown, result, chart) -> None:
    from rich.console import Console

    from clusterlm.cluster.report import plan_tables, search_table
    from clusterlm.model.flops import param_count

    console = Console()
    cfg = workload.model
    console.print(f"[bold]{cfg.preset or 'model'}[/bold]: {param_count(cfg) / 1e9:,.2f} B parameters, "
                  f"seq {workload.seq_len}, global batch {workload.global_batch} "
                  f"({workload.tokens_per_step:,} tokens/step) on {cluster.name}: "
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
    for table in plan_tables(best):
        console.print(table)
    if not best.fits:
        console.print(f"[red]does not fit: {best.memory.total / 2**30:,.1f} GiB needed, "
                      f"{best.memory.capacity / 2**30:,.0f} GiB per accelerator[/red]; try --recompute full, "
                      "--zero 3, more pipeline stages, a smaller --micro-batch, or --search")
    if chart:
        console.print(f"chart: {chart}")
    if args.emit:
        console.print(f"emitted config and launch scripts: {args.emit}")


def resolve_model(text: str, vocab: int | None):
    """Preset name or YAML → (ModelConfig, defaults from a run config, the run config dict or None)."""
    from clusterlm.config.base import load_yaml, validate
    from clusterlm.config.run import RunConfig
    from clusterlm.config.model import ModelConfig

    defaults: dict = {}
    base_run = None
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        data = load_yaml(path)
        if "model" in data or "train" in data:
            run_cfg = validate(RunConfig, data)
            base_run = run_cfg
            model = run_cfg.model
            tr = run_cfg.train
            if model.vocab_size is None and vocab is None:
                vocab = run_cfg.data.vocab_size  # the tokenizer `prepare` trains has this size
            par = run_cfg.parallel
            defaults = {"seq_len": tr.seq_len, "micro_batch": tr.micro_batch, "batch": tr.batch_size,
                        "batch_per_replica": tr.micro_batch * tr.grad_accum,
                        "recompute": "full" if tr.activation_checkpointing else "none",
                        "precision": tr.precision if tr.precision != "auto" else None,
                        "parallel": {"tp": par.tp, "pp": par.pp},
                        # FSDP2 (dp_shard, the default when left at -1) shards everything: ZeRO-3.
                        "zero": 3 if par.dp_replicate == 1 and par.dp_shard != 1 else 0}
        else:
            model = validate(ModelConfig, data, prefix="model")
    else:
        model = validate(ModelConfig, {"preset": text}, prefix="model")
    if vocab is not None:
        model = model.model_copy(update={"vocab_size": vocab})
    if model.vocab_size is None:
        raise ConfigError(f"model '{text}' has no vocab_size; pass --vocab N")
    return model, defaults, base_run


def run_config_from_plan(est, base_run=None) -> dict:
    """A `RunConfig` (as a dict) that trains the planned model with the planned layout."""
    from clusterlm.config.base import validate
    from clusterlm.config.run import RunConfig

    e, wl = est.execution, est.workload
    data = base_run.model_dump(mode="json") if base_run is not None else {}
    steps = math.ceil(wl.run_steps) if wl.run_steps is not None else data.get("train", {}).get("max_steps", 1000)
    train = dict(data.get("train", {}))
    train.update({"seq_len": wl.seq_len, "micro_batch": e.micro_batch, "batch_size": wl.global_batch,
                  "max_steps": int(steps), "precision": e.precision,
                  # The trainer recomputes whole blocks; selective recompute maps to none (with fused
                  # attention it stores the same tensors).
                  "activation_checkpointing": e.recompute == "full"})
    train.pop("grad_accum", None)
    if train.get("warmup_steps", 50) >= train["max_steps"]:
        train["warmup_steps"] = max(0, train["max_steps"] // 10)
    shard = e.zero >= 1
    parallel = {"tp": e.tp, "pp": e.pp, "dp_shard": e.dp if shard else 1, "dp_replicate": 1 if shard else e.dp}
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
        (tmp / "plan.json").write_text(json.dumps(to_json(est), indent=2) + "\n", encoding="utf-8")
        (tmp / "launch.sh").write_text("\n".join(launch), encoding="utf-8")
        (tmp / "job.sbatch").write_text(sbatch_script(spec), encoding="utf-8")
        for script in ("launch.sh", "job.sbatch"):
            (tmp / script).chmod(0o755)
    return out


def _validate(args: argparse.Namespace) -> int:
    from clusterlm.cluster import validation
    from clusterlm.cluster.report import validation_table

    groups = {**validation.all_rows(), **validation.out_of_sample_rows()}
    if args.json:
        print(json.dumps({name: {"mean_abs_error": validation.mean_abs_error(rows),
                                 "rows": [{"case": r.case, "quantity": r.quantity, "published": r.published,
                                           "predicted": r.predicted, "error": r.error} for r in rows]}
                          for name, rows in groups.items()}, indent=2))
        return 0
    from rich.console import Console

    console = Console()
    for rows in groups.values():
        console.print(validation_table(rows, rows[0].source))
    return 0
