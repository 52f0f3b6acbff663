"""Checks a Slurm job must pass before it is written or submitted, and the submission itself.

A job that cannot work should fail on the login node in a second, not after hours in the
queue: `sbatch` must exist, the partition must exist (and have GPUs when GPUs are asked
for, and allow the time limit), and the time limit must leave room for at least one
periodic checkpoint — otherwise every requeue would start over from the same place.
"""

from __future__ import annotations

import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from clusterlm.config.base import Section, load_yaml, validate
from clusterlm.distributed.launch import LaunchSpec, parse_time_limit, sbatch_script
from clusterlm.distributed.slurm_client import (
    NOT_INSTALLED_HINT,
    Partition,
    Runner,
    SlurmError,
    partitions,
    run_command,
    submit,
)
from clusterlm.errors import OutputExistsError
from clusterlm.fsio import atomic_write_text

_UNLIMITED = ("infinite", "unlimited", "")


class SlurmOptions(Section):
    """A site's job options (`clusterlm launch --slurm-config FILE`); command-line flags win.

    Kept apart from the run config on purpose: the same run config goes to different
    clusters, while account, partition and QoS belong to a user on one cluster."""

    job_name: str | None = None
    nodes: int | None = Field(default=None, ge=1)
    gpus_per_node: int | None = Field(default=None, ge=1)  # processes per node
    cpu: bool | None = None  # CPU-only nodes: no GPU request
    time: str | None = None  # Slurm --time
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    cpus_per_task: int | None = Field(default=None, ge=1)
    mem: str | None = None
    launcher: Literal["torchrun", "srun"] | None = None
    signal_lead_s: int | None = Field(default=None, ge=0)
    requeue: bool | None = None


def resolve_options(path: str | Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """Options from the file (if any) overridden by the flags that were given (not None)."""
    from_file = validate(SlurmOptions, load_yaml(path)).model_dump(exclude_none=True) if path else {}
    return {**from_file, **{k: v for k, v in flags.items() if v is not None}}


def measured_step_time_s(records: list[dict[str, Any]]) -> float | None:
    """Median step time of a run's `metrics.jsonl` records, or None when it has not trained yet."""
    times = [r["step_time_s"] for r in records
             if r.get("kind") == "train" and isinstance(r.get("step_time_s"), (int, float))]
    return statistics.median(times) if times else None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def check_time_budget(spec: LaunchSpec, ckpt_every: int, step_time_s: float | None, source: str = "") -> None:
    """The time limit must hold one checkpoint interval, and the warning signal one step.

    Without a step time (a run that has not started, no --step-time-s) only the warning
    lead is checked (by LaunchSpec itself)."""
    if step_time_s is None or step_time_s <= 0:
        return
    limit_s = spec.time_limit_s
    interval_s = ckpt_every * step_time_s
    where = f" ({source})" if source else ""
    if limit_s < interval_s:
        raise SlurmError(
            f"time limit {spec.time_limit} is shorter than one checkpoint interval: train.ckpt_every={ckpt_every} "
            f"steps × {step_time_s:.3g} s/step{where} = {_duration(interval_s)}; lower train.ckpt_every "
            f"or raise --time")
    if spec.signal_lead_s and step_time_s > spec.signal_lead_s:
        raise SlurmError(
            f"one step takes {step_time_s:.3g} s{where}, longer than the {spec.signal_lead_s} s warning before the "
            f"time limit: training could not finish its step and checkpoint in time; raise --signal-lead")


def check_partition(spec: LaunchSpec, known: dict[str, Partition]) -> Partition:
    """The partition exists (or there is a default one), has GPUs if asked, allows the time limit."""
    if not known:
        raise SlurmError("sinfo lists no partitions: is the Slurm controller up?")
    if spec.partition is None:
        default = [p for p in known.values() if p.default]
        if not default:
            raise SlurmError(f"the cluster has no default partition; choose one with --partition "
                             f"({', '.join(sorted(known))})")
        part = default[0]
    elif spec.partition not in known:
        raise SlurmError(f"unknown partition '{spec.partition}'; this cluster has: {', '.join(sorted(known))}")
    else:
        part = known[spec.partition]
    if spec.use_gpus and not part.has_gpus:
        gpu_parts = sorted(p.name for p in known.values() if p.has_gpus)
        hint = f"choose a GPU partition ({', '.join(gpu_parts)})" if gpu_parts else "this cluster has no GPUs"
        raise SlurmError(f"GPUs requested (--gpus-per-node {spec.gpus_per_node}) but partition '{part.name}' "
                         f"has none; pass --cpu for CPU-only nodes or {hint}")
    if part.max_time.lower() not in _UNLIMITED:
        max_s = parse_time_limit(part.max_time)
        if spec.time_limit_s > max_s:
            raise SlurmError(f"time limit {spec.time_limit} exceeds partition '{part.name}' maximum "
                             f"{part.max_time}; lower --time")
    return part


def preflight(spec: LaunchSpec, runner: Runner = run_command) -> Partition:
    """Everything checkable against the cluster before a script is written or submitted."""
    if shutil.which("sbatch") is None:
        raise SlurmError(f"'sbatch' not found on PATH: cannot submit; {NOT_INSTALLED_HINT}, "
                         "or drop --submit to only write the script")
    return check_partition(spec, partitions(runner))


def submit_script(script: Path, runner: Runner = run_command) -> str:
    """`sbatch --parsable SCRIPT` from the current directory (where relative config paths resolve)."""
    return submit(script, runner)


@dataclass
class SlurmJob:
    script: Path
    job_id: str | None  # None when only written (or, for a dry run, not even that)
    text: str = ""  # the batch script


def write_job(spec: LaunchSpec, script: Path, *, ckpt_every: int, step_time_s: float | None = None,
              step_time_source: str = "", overwrite: bool = False, submit: bool = False,
              dry_run: bool = False, runner: Runner = run_command) -> SlurmJob:
    """Check, write and (with `submit`) submit a batch script. Every check runs before the
    script is written, so a refused job leaves nothing behind; `dry_run` stops after the checks
    (nothing written or submitted) and returns the script text only."""
    if script.exists() and not overwrite:
        raise OutputExistsError(f"{script} exists; pass --overwrite to replace it")
    check_time_budget(spec, ckpt_every, step_time_s, step_time_source)
    if submit:
        preflight(spec, runner)
    text = sbatch_script(spec)
    if dry_run:
        return SlurmJob(script, None, text)
    atomic_write_text(script, text)
    script.chmod(0o755)
    return SlurmJob(script, submit_script(script, runner) if submit else None, text)
