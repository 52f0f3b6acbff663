"""Print (or run) torchrun command lines, or write a Slurm sbatch script, for a training config.

  clusterlm launch --nodes N --gpus-per-node G CONFIG [key=value ...]
      One torchrun command per node: `--standalone` for one node, c10d rendezvous at
      --rdzv-host:--port for several (the same command on every node).
  clusterlm launch ... --slurm [--out job.sbatch] [--time 24:00:00] [--partition P] [--account A]
      An sbatch script: one task per node, `srun torchrun …` with the allocation's first node as
      rendezvous endpoint and NCCL environment. Outside Slurm, `bash job.sbatch` runs the N
      node agents on 127.0.0.1 — a loopback cluster on one machine.
  --run executes instead of printing: the torchrun command(s) on this machine (several nodes
      become local agents on 127.0.0.1), or with --slurm, `sbatch` (or `bash` when Slurm is absent).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from clusterlm.cli.common import add_config_args, load_config_from_args, split_config_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes (default 1)")
    parser.add_argument("--gpus-per-node", type=int, default=1, help="processes (GPUs) per node (default 1)")
    parser.add_argument("--slurm", action="store_true", help="write an sbatch script")
    parser.add_argument("--out", help="sbatch script path (default <job-name>.sbatch)")
    parser.add_argument("--run", action="store_true", help="execute instead of printing")
    parser.add_argument("--rdzv-host", default="127.0.0.1", help="rendezvous host for multi-node torchrun")
    parser.add_argument("--port", type=int, default=29500, help="rendezvous port (default 29500)")
    parser.add_argument("--max-restarts", type=int, default=0, help="torchrun elastic restarts (default 0)")
    parser.add_argument("--job-name", default="clusterlm", help="Slurm job name / rendezvous id")
    parser.add_argument("--time", default="24:00:00", help="Slurm time limit (HH:MM:SS or D-HH:MM:SS)")
    parser.add_argument("--partition", help="Slurm partition")
    parser.add_argument("--account", help="Slurm account")
    parser.add_argument("--cpu", action="store_true", help="CPU-only nodes (no GPU request in the script)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out script")
    add_config_args(parser, required=True)


def _spec(args: argparse.Namespace):
    from clusterlm.distributed.launch import LaunchSpec

    path, overrides = split_config_args(args.config_and_overrides)
    if path is None:
        from clusterlm.errors import UsageError

        raise UsageError("CONFIG (a run config YAML) is required")
    cfg = load_config_from_args(args)  # fail now, not on N nodes later
    world = args.nodes * args.gpus_per_node
    par = cfg.parallel
    if par.dp_shard != -1:
        product = par.dp_replicate * par.dp_shard * par.tp * par.pp
        if product != world:
            from clusterlm.errors import ConfigError

            raise ConfigError(f"parallel degrees multiply to {product} (dp_replicate·dp_shard·tp·pp) but "
                              f"--nodes × --gpus-per-node = {world}; set parallel.dp_shard=-1 or change the degrees")
    return LaunchSpec(config=path, nodes=args.nodes, gpus_per_node=args.gpus_per_node, overrides=tuple(overrides),
                      rdzv_host=args.rdzv_host, rdzv_port=args.port, rdzv_id=args.job_name,
                      max_restarts=args.max_restarts, job_name=args.job_name, time_limit=args.time,
                      partition=args.partition, account=args.account, use_gpus=not args.cpu)


def _torchrun() -> str:
    local = Path(sys.executable).with_name("torchrun")
    return str(local) if local.exists() else (shutil.which("torchrun") or "torchrun")


def run(args: argparse.Namespace) -> int:
    from clusterlm.distributed.launch import sbatch_script, shell_join, torchrun_commands
    from clusterlm.errors import OutputExistsError
    from clusterlm.fsio import atomic_write_text

    spec = _spec(args)
    if args.slurm:
        out = Path(args.out or f"{args.job_name}.sbatch")
        if out.exists() and not args.overwrite:
            raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
        atomic_write_text(out, sbatch_script(spec))
        out.chmod(0o755)
        print(f"wrote {out} ({spec.nodes} node(s) × {spec.gpus_per_node})")
        if not args.run:
            return 0
        env = {**os.environ, "TORCHRUN": _torchrun()}
        submit = ["sbatch", str(out)] if shutil.which("sbatch") else ["bash", str(out)]
        return subprocess.call(submit, env=env)
    commands = torchrun_commands(spec)
    if not args.run:
        if spec.nodes == 1:
            print(shell_join(commands[0]))
        else:
            print(f"# run on each of the {spec.nodes} nodes (c10d assigns node ranks):")
            print(shell_join(commands[0]))
        return 0
    commands = [[_torchrun(), *cmd[1:]] for cmd in commands]
    procs = [subprocess.Popen(cmd) for cmd in commands]  # several nodes → local agents on 127.0.0.1
    status = 0
    try:
        for proc in procs:
            status = proc.wait() or status
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
        raise
    return status
