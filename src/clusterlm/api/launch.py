"""`clusterlm launch`: check a run config for the job's world size, then print, run or submit it.

Everything that can be checked before a process starts is checked here, once, for every way of
launching (print, `--run`, `--slurm`, `--submit`, `--dry-run`): the config loads, and its layout
passes `config.run.parallel_plan` — the very check `clusterlm train` runs first (degrees
multiply to nodes × processes per node, tp divides the heads, key/value heads, FFN width and
sequence, pipeline stages and schedule fit the layers and micro-batches, no fp16 with FSDP,
TP or PP). When a cluster spec is known (`--cluster SPEC`, or the `plan.json` that `clusterlm
plan --emit` wrote beside the config), the planner's per-rank memory estimate of this layout
must fit that cluster's accelerators.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterlm.api.plan import PLAN_FILE
from clusterlm.cluster.estimator import Estimate, estimate
from clusterlm.cluster.executable import execution_from_plan
from clusterlm.cluster.spec import load_cluster
from clusterlm.cluster.workload import Workload
from clusterlm.config.parallel import ParallelPlan
from clusterlm.config.run import RunConfig, load_run_config, parallel_plan
from clusterlm.distributed.launch import LaunchSpec, torchrun_commands
from clusterlm.distributed.slurm_submit import SlurmJob, measured_step_time_s, resolve_options, write_job
from clusterlm.errors import ConfigError, UsageError
from clusterlm.train.metrics import METRICS_FILE, read_metrics

# Job options that come from flags or a --slurm-config file (flags win).
OPTION_NAMES = ("job_name", "nodes", "gpus_per_node", "cpu", "time", "partition", "account", "qos", "cpus_per_task",
                "mem", "launcher", "signal_lead_s", "requeue")


@dataclass(frozen=True)
class MemoryFit:
    """The planner's per-rank memory estimate of the layout on the job's cluster."""

    estimate: Estimate
    cluster: str  # the spec's name or path
    source: str  # where it came from: --cluster, or the plan.json beside the config

    def describe(self) -> str:
        m = self.estimate.memory
        return (f"{m.total / 2**30:,.1f} GiB per rank of {m.capacity / 2**30:,.1f} GiB ({m.stage} pipeline stage) "
                f"on {self.estimate.cluster.acc.display}, cluster '{self.cluster}' ({self.source})")


@dataclass(frozen=True)
class Launch:
    spec: LaunchSpec
    config: RunConfig
    plan: ParallelPlan  # the validated layout every worker will run
    memory: MemoryFit | None  # None: no cluster spec known (or a model the planner does not model)


def prepare(config: str | None, overrides: list[str] | tuple[str, ...] = (), *, flags: dict[str, Any] | None = None,
            slurm_config: str | None = None, cluster: str | None = None, rdzv_host: str = "127.0.0.1",
            rdzv_port: int = 29500, max_restarts: int = 0) -> Launch:
    """Load and check `config` for the job `flags` describe (nodes, processes per node, Slurm options)."""
    if config is None:
        raise UsageError("CONFIG (a run config YAML) is required")
    cfg = load_run_config(config, overrides)  # fail now, not on N nodes later
    opts = resolve_options(slurm_config, {k: v for k, v in (flags or {}).items() if k in OPTION_NAMES})
    nodes, gpn, job_name = opts.get("nodes", 1), opts.get("gpus_per_node", 1), opts.get("job_name", "clusterlm")
    if nodes < 1 or gpn < 1:
        raise UsageError(f"--nodes and --gpus-per-node must be ≥ 1, got {nodes} and {gpn}")
    world = nodes * gpn
    try:
        plan = parallel_plan(cfg, world)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (world size {world} = --nodes {nodes} × --gpus-per-node {gpn})") from None
    memory = check_memory(cfg, plan, *_cluster_source(config, cluster))
    spec = LaunchSpec(config=config, nodes=nodes, gpus_per_node=gpn, overrides=tuple(overrides),
                      rdzv_host=rdzv_host, rdzv_port=rdzv_port, rdzv_id=job_name, max_restarts=max_restarts,
                      job_name=job_name, time_limit=opts.get("time", "24:00:00"), partition=opts.get("partition"),
                      account=opts.get("account"), qos=opts.get("qos"), cpus_per_task=opts.get("cpus_per_task"),
                      mem=opts.get("mem"), use_gpus=not opts.get("cpu", False),
                      launcher=opts.get("launcher", "torchrun"), signal_lead_s=opts.get("signal_lead_s", 120),
                      requeue=opts.get("requeue", True), python=sys.executable, torchrun=torchrun_path())
    return Launch(spec, cfg, plan, memory)


def _cluster_source(config: str, cluster: str | None) -> tuple[str | None, str]:
    """The cluster spec to check memory against: --cluster, else the one the emitted plan was made for."""
    if cluster is not None:
        return cluster, "--cluster"
    plan_file = Path(config).parent / PLAN_FILE
    if plan_file.is_file():
        try:
            ref = json.loads(plan_file.read_text(encoding="utf-8")).get("cluster_spec")
        except (OSError, json.JSONDecodeError, AttributeError):
            ref = None
        if isinstance(ref, str):
            return ref, str(plan_file)
    return None, ""


def check_memory(cfg: RunConfig, plan: ParallelPlan, cluster_ref: str | None, source: str = "") -> MemoryFit | None:
    """Refuse a layout whose per-rank memory estimate exceeds the cluster's accelerators (ConfigError)."""
    if cluster_ref is None or not cfg.model.is_transformer:
        return None  # no spec to check against; the planner models transformers only
    try:
        cluster = load_cluster(cluster_ref, plan.world_size)
    except ConfigError as exc:
        raise ConfigError(f"cluster spec '{cluster_ref}' ({source}): {exc}") from None
    model = cfg.model if cfg.model.vocab_size is not None else cfg.model.model_copy(
        update={"vocab_size": cfg.data.vocab_size})  # the tokenizer `prepare` trains has this size
    precision = cfg.train.precision
    if precision == "auto":  # what the trainer picks: bf16 on accelerators, fp32 on CPUs
        precision = "fp32" if cluster.acc.kind == "cpu" else "bf16"
    workload = Workload(model=model, seq_len=cfg.train.seq_len, global_batch=plan.global_batch())
    fit = MemoryFit(estimate(workload, cluster, execution_from_plan(plan, precision)), cluster_ref, source)
    if not fit.estimate.fits:
        raise ConfigError(f"the layout ({plan.describe()}) needs {fit.describe()}: it does not fit; enable "
                          "train.activation_checkpointing, shard more (parallel.dp_shard, tp, pp) or lower "
                          "train.micro_batch")
    return fit


def torchrun_path() -> str:
    """This installation's torchrun (the job then runs the same venv), else the one on PATH."""
    local = Path(sys.executable).with_name("torchrun")
    return str(local) if local.exists() else (shutil.which("torchrun") or "torchrun")


def commands(launch: Launch) -> list[list[str]]:
    """One torchrun command per node (a single `--standalone` one for one node)."""
    return torchrun_commands(launch.spec)


def run_local(launch: Launch) -> int:
    """Run the torchrun command(s) here (several nodes become agents on 127.0.0.1); worst exit status."""
    procs = [subprocess.Popen([launch.spec.torchrun, *cmd[1:]]) for cmd in commands(launch)]
    status = 0
    try:
        for proc in procs:
            status = proc.wait() or status
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
        raise
    return status


@dataclass(frozen=True)
class SlurmOutcome:
    script: Path
    job: SlurmJob | None  # None for a dry run (nothing written)
    text: str  # the batch script
    status: int = 0  # with `run` outside Slurm: the loopback run's exit status


def slurm(launch: Launch, *, out: str | Path | None = None, submit: bool = False, run: bool = False,
          step_time_s: float | None = None, overwrite: bool = False, dry_run: bool = False) -> SlurmOutcome:
    """Check, write and (with `submit`, or `run` where Slurm is installed) submit the batch script;
    `run` without Slurm runs its loopback branch here; `dry_run` checks everything and writes nothing."""
    spec, cfg = launch.spec, launch.config
    source = "--step-time-s"
    if step_time_s is None:  # a run that already trained: its own step time
        step_time_s = measured_step_time_s(read_metrics(Path(cfg.train.out_dir) / METRICS_FILE))
        source = f"measured in {cfg.train.out_dir}"
    script = Path(out or f"{spec.job_name}.sbatch")
    submit = submit or (run and shutil.which("sbatch") is not None)
    job = write_job(spec, script, ckpt_every=cfg.train.ckpt_every, step_time_s=step_time_s,
                    step_time_source=source, overwrite=overwrite, submit=submit, dry_run=dry_run)
    if dry_run:
        return SlurmOutcome(script, None, job.text)
    status = 0
    if job.job_id is None and run:  # no Slurm here: the script's loopback branch runs the nodes on this machine
        status = subprocess.call(["bash", str(script)])  # its TORCHRUN defaults to spec.torchrun
    return SlurmOutcome(script, job, job.text, status)
