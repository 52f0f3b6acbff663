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

Examples:
  clusterlm launch --nodes 2 --gpus-per-node 8 run.yaml parallel.tp=8
  clusterlm launch --slurm --submit --nodes 4 --gpus-per-node 8 --partition gpu --time 2-00:00:00 run.yaml
  clusterlm launch --slurm --submit --cpu --launcher srun --gpus-per-node 2 --time 00:30:00 run.yaml
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
    parser.add_argument("--nodes", type=int, help="number of nodes (default 1)")
    parser.add_argument("--gpus-per-node", type=int, help="processes (GPUs) per node (default 1)")
    parser.add_argument("--slurm", action="store_true", help="write an sbatch script")
    parser.add_argument("--submit", action="store_true", help="with --slurm: check and submit it (sbatch --parsable)")
    parser.add_argument("--slurm-config", metavar="YAML", help="Slurm job options file; flags override it")
    parser.add_argument("--out", help="sbatch script path (default <job-name>.sbatch)")
    parser.add_argument("--run", action="store_true", help="execute instead of printing")
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


def _spec(args: argparse.Namespace):
    from clusterlm.distributed.launch import LaunchSpec
    from clusterlm.distributed.slurm_submit import resolve_options

    path, overrides = split_config_args(args.config_and_overrides)
    if path is None:
        from clusterlm.errors import UsageError

        raise UsageError("CONFIG (a run config YAML) is required")
    cfg = load_config_from_args(args)  # fail now, not on N nodes later
    names = ("job_name", "nodes", "gpus_per_node", "cpu", "time", "partition", "account", "qos", "cpus_per_task",
             "mem", "launcher", "signal_lead_s", "requeue")
    opts = resolve_options(args.slurm_config, {name: getattr(args, name) for name in names})
    nodes, gpn, job_name = opts.get("nodes", 1), opts.get("gpus_per_node", 1), opts.get("job_name", "clusterlm")
    world = nodes * gpn
    par = cfg.parallel
    if par.dp_shard != -1:
        product = par.dp_replicate * par.dp_shard * par.tp * par.pp
        if product != world:
            from clusterlm.errors import ConfigError

            raise ConfigError(f"parallel degrees multiply to {product} (dp_replicate·dp_shard·tp·pp) but "
                              f"--nodes × --gpus-per-node = {world}; set parallel.dp_shard=-1 or change the degrees")
    spec = LaunchSpec(config=path, nodes=nodes, gpus_per_node=gpn, overrides=tuple(overrides),
                      rdzv_host=args.rdzv_host, rdzv_port=args.port, rdzv_id=job_name,
                      max_restarts=args.max_restarts, job_name=job_name, time_limit=opts.get("time", "24:00:00"),
                      partition=opts.get("partition"), account=opts.get("account"), qos=opts.get("qos"),
                      cpus_per_task=opts.get("cpus_per_task"), mem=opts.get("mem"),
                      use_gpus=not opts.get("cpu", False), launcher=opts.get("launcher", "torchrun"),
                      signal_lead_s=opts.get("signal_lead_s", 120), requeue=opts.get("requeue", True),
                      python=sys.executable, torchrun=_torchrun())
    return spec, cfg


def _torchrun() -> str:
    local = Path(sys.executable).with_name("torchrun")
    return str(local) if local.exists() else (shutil.which("torchrun") or "torchrun")


def _slurm(args: argparse.Namespace, spec, cfg) -> int:
    from clusterlm.distributed.slurm_submit import measured_step_time_s, write_job
    from clusterlm.train.metrics import METRICS_FILE, read_metrics

    step_time_s, source = args.step_time_s, "--step-time-s"
    if step_time_s is None:  # a run that already trained: its own step time
        records = read_metrics(Path(cfg.train.out_dir) / METRICS_FILE)
        step_time_s, source = measured_step_time_s(records), f"measured in {cfg.train.out_dir}"
    submit = args.submit or (args.run and shutil.which("sbatch") is not None)
    out = Path(args.out or f"{spec.job_name}.sbatch")
    job = write_job(spec, out, ckpt_every=cfg.train.ckpt_every, step_time_s=step_time_s, step_time_source=source,
                    overwrite=args.overwrite, submit=submit)
    shape = f"{spec.nodes} node(s) × {spec.gpus_per_node}, {spec.launcher}, time limit {spec.time_limit}"
    if job.job_id is None:
        print(f"wrote {out} ({shape})")
        if args.run:  # no Slurm here: the script's loopback branch runs the nodes on this machine
            return subprocess.call(["bash", str(out)], env={**os.environ, "TORCHRUN": _torchrun()})
        return 0
    sys.stderr.write(f"wrote {out} ({shape}); submitted; follow it with: clusterlm jobs {job.job_id}\n")
    print(job.job_id)
    return 0


def run(args: argparse.Namespace) -> int:
    from clusterlm.distributed.launch import shell_join, torchrun_commands

    spec, cfg = _spec(args)
    if args.slurm:
        return _slurm(args, spec, cfg)
    if args.submit:
        from clusterlm.errors import UsageError

        raise UsageError("--submit needs --slurm (it submits the batch script)")
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
