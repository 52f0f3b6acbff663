"""Print (or run) torchrun command lines, or write and submit a Slurm batch script, for a training config.

  clusterlm launch --nodes N --gpus-per-node G CONFIG [key=value ...]
      One torchrun command per node: `--standalone` for one node, c10d rendezvous at
      --rdzv-host:--port for several (the same command on every node).
  clusterlm launch ... --slurm [--out job.sbatch] [--time 24:00:00] [--partition P] [--account A] [--qos Q]
      An sbatch script: one task per node running `srun torchrun …` (or, with --launcher srun, one
      task per rank running `clusterlm train` itself), a warning signal --signal-lead seconds before
      the time limit on which training checkpoints and the job requeues itself (--no-requeue: it
      just stops), the log in <job-name>-<jobid>.out. Outside Slurm, `bash job.sbatch` runs the N
      node agents on 127.0.0.1 — a loopback cluster on one machine.
  clusterlm launch ... --slurm --submit
      Also checks the job against the cluster (sbatch present, partition known, GPUs there, time
      limit allowed) and submits it with `sbatch --parsable`; prints the job id on stdout.
      Follow it with `clusterlm jobs ID`.
  --slurm-config FILE  job options in YAML (job_name, nodes, gpus_per_node, cpu, time, partition,
      account, qos, cpus_per_task, mem, launcher, signal_lead_s, requeue); flags override it.
  --run executes instead of printing: the torchrun command(s) on this machine (several nodes
      become local agents on 127.0.0.1), or with --slurm, a checked submission (`bash` when Slurm
      is absent).
  --dry-run checks and prints only. Every way of launching first checks the config's layout for
      nodes × gpus-per-node processes with the validator `clusterlm train` runs (degrees, tp
      against heads/FFN/sequence, pipeline split and schedule, fp16 with FSDP/TP/PP) and, when a
      cluster spec is known (--cluster, or the plan.json of `clusterlm plan --emit`), that the
      planner's per-rank memory estimate fits; nothing starts when a check fails.

Examples:
  clusterlm launch --nodes 2 --gpus-per-node 8 run.yaml parallel.tp=8
  clusterlm launch --dry-run --nodes 2048 --gpus-per-node 8 plans/405b/config.yaml
  clusterlm launch --slurm --submit --nodes 4 --gpus-per-node 8 --partition gpu --time 2-00:00:00 run.yaml
  clusterlm launch --slurm --submit --cpu --launcher srun --gpus-per-node 2 --time 00:30:00 run.yaml
"""

from __future__ import annotations

import argparse
import sys

from clusterlm.cli.common import add_config_args, split_config_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, help="number of nodes (default 1)")
    parser.add_argument("--gpus-per-node", type=int, help="processes (GPUs) per node (default 1)")
    parser.add_argument("--slurm", action="store_true", help="write an sbatch script")
    parser.add_argument("--submit", action="store_true", help="with --slurm: check and submit it (sbatch --parsable)")
    parser.add_argument("--slurm-config", metavar="YAML", help="Slurm job options file; flags override it")
    parser.add_argument("--out", help="sbatch script path (default <job-name>.sbatch)")
    parser.add_argument("--run", action="store_true", help="execute instead of printing")
    parser.add_argument("--dry-run", action="store_true",
                        help="run every check (layout, memory fit, Slurm time budget; with --submit also the "
                             "partition) and print what would run; start, write and submit nothing")
    parser.add_argument("--cluster", metavar="SPEC",
                        help="check the layout's per-rank memory against this cluster spec (preset, YAML or "
                             "'local'; default: the plan.json `clusterlm plan --emit` wrote beside CONFIG)")
    parser.add_argument("--rdzv-host", default="127.0.0.1", help="rendezvous host for multi-node torchrun")
    parser.add_argument("--port", type=int, default=29500, help="rendezvous port (default 29500)")
    parser.add_argument("--max-restarts", type=int, default=0, help="torchrun elastic restarts (default 0)")
    parser.add_argument("--job-name", help="Slurm job name / rendezvous id (default clusterlm)")
    parser.add_argument("--time", help="Slurm time limit (HH:MM:SS or D-HH:MM:SS; default 24:00:00)")
    parser.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    parser.add_argument("--account", help="Slurm account")
    parser.add_argument("--qos", help="Slurm quality of service")
    parser.add_argument("--cpus-per-task", type=int, help="CPUs per Slurm task")
    parser.add_argument("--mem", help="memory per node (Slurm --mem: 64G, 0 = all)")
    parser.add_argument("--launcher", choices=["torchrun", "srun"],
                        help="torchrun agent per node (default) or one srun task per rank")
    parser.add_argument("--signal-lead", type=int, dest="signal_lead_s", metavar="SECONDS",
                        help="checkpoint this long before the time limit (default 120; 0: no warning)")
    parser.add_argument("--no-requeue", dest="requeue", action="store_const", const=False,
                        help="after the warning, stop with a checkpoint but do not requeue")
    parser.add_argument("--step-time-s", type=float, metavar="SECONDS",
                        help="expected step time, to check --time against train.ckpt_every "
                             "(default: measured in train.out_dir when the run exists)")
    parser.add_argument("--cpu", action="store_true", default=None,
                        help="CPU-only nodes (no GPU request in the script)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out script")
    add_config_args(parser, required=True)


def run(args: argparse.Namespace) -> int:
    from clusterlm.api import launch as api
    from clusterlm.distributed.launch import shell_join

    if args.dry_run and (args.run or args.submit):
        from clusterlm.errors import UsageError

        raise UsageError("--dry-run only checks and prints; drop --run / --submit, or drop --dry-run")
    if args.submit and not args.slurm:
        from clusterlm.errors import UsageError

        raise UsageError("--submit needs --slurm (it submits the batch script)")
    path, overrides = split_config_args(args.config_and_overrides)
    launch = api.prepare(path, overrides, flags={name: getattr(args, name) for name in api.OPTION_NAMES},
                         slurm_config=args.slurm_config, cluster=args.cluster, rdzv_host=args.rdzv_host,
                         rdzv_port=args.port, max_restarts=args.max_restarts)
    if args.dry_run:
        _print_checks(launch)
    if args.slurm:
        return _slurm(args, api, launch)
    commands = api.commands(launch)
    if args.run:
        return api.run_local(launch)
    if launch.spec.nodes > 1:
        print(f"# run on each of the {launch.spec.nodes} nodes (c10d assigns node ranks):")
    print(shell_join(commands[0]))
    return 0


def _print_checks(launch) -> None:
    """What --dry-run checked, on stderr (stdout keeps the commands or script alone)."""
    spec = launch.spec
    lines = [f"checked: {launch.plan.describe()} on {spec.world_size} processes ({spec.nodes} node(s) × "
             f"{spec.gpus_per_node}), {launch.plan.micro_batch} sequences per micro-batch × {launch.plan.grad_accum} "
             f"micro-batches × {launch.plan.dp} data-parallel ranks = {launch.plan.global_batch()} per step"]
    if launch.memory is not None:
        lines.append(f"memory: {launch.memory.describe()}: fits")
    else:
        lines.append("memory: not checked (no cluster spec: pass --cluster SPEC)")
    sys.stderr.write("\n".join(lines) + "\n")


def _slurm(args: argparse.Namespace, api, launch) -> int:
    result = api.slurm(launch, out=args.out, submit=args.submit, run=args.run, step_time_s=args.step_time_s,
                       overwrite=args.overwrite, dry_run=args.dry_run)
    spec = launch.spec
    shape = f"{spec.nodes} node(s) × {spec.gpus_per_node}, {spec.launcher}, time limit {spec.time_limit}"
    if result.job is None:  # dry run: the script that would be written
        sys.stderr.write(f"would write {result.script} ({shape})\n")
        print(result.text, end="")
        return 0
    if result.job.job_id is None:
        print(f"wrote {result.script} ({shape})")
        return result.status
    sys.stderr.write(f"wrote {result.script} ({shape}); submitted; follow it with: clusterlm jobs {result.job.job_id}\n")
    print(result.job.job_id)
    return 0
