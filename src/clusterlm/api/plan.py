"""`clusterlm plan`: predict one layout or search them, and emit a training config that runs.

    request ──resolve──▶ workload, cluster, execution ──estimate / search──▶ plan
       plan ──checks (executable, fits, ParallelPlan.check)──▶ DIR/config.yaml, plan.json,
                                                              launch.sh, job.sbatch, plan.png

What `--emit` writes is refused before anything is written when clusterlm's trainer could not
run it (`cluster/executable.py`) or when it does not fit in the accelerators' memory, and the
config it writes passes `config.run.parallel_plan` — the check `clusterlm train` runs first.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from clusterlm.cluster import planner, request, validation
from clusterlm.cluster.estimator import Estimate, estimate
from clusterlm.cluster.executable import not_executable, trainer_layout
from clusterlm.cluster.report import plan_chart
from clusterlm.cluster.request import PlanRequest
from clusterlm.cluster.spec import Cluster, is_local
from clusterlm.cluster.totals import run_totals
from clusterlm.cluster.workload import Workload
from clusterlm.config.base import validate
from clusterlm.config.run import RunConfig, parallel_plan
from clusterlm.distributed.launch import LaunchSpec, sbatch_script, shell_join, torchrun_commands
from clusterlm.errors import ConfigError, OutputExistsError
from clusterlm.fsio import atomic_dir

PLAN_FILE = "plan.json"  # `launch` reads the cluster spec the plan was made for from here
_LAYOUT_KEYS = ("dp_replicate", "dp_shard", "tp", "pp", "pp_schedule", "pp_virtual_stages", "pp_stage_layers",
                "fsdp_reshard_after_forward")


@dataclass
class PlanResult:
    workload: Workload
    cluster: Cluster
    best: Estimate | None  # the plan: the fastest executable layout that fits, or the one asked for
    shown: list[Estimate]  # rows of the table (the ranked layouts, or the closest when none fits)
    search: planner.SearchResult | None
    reason: str | None  # why clusterlm's trainer cannot run `best` (None: it can)
    bands: dict[str, float]
    chart: Path | None = None
    emitted: Path | None = None

    @property
    def fits(self) -> bool:
        """There is a plan and it fits in memory (the CLI's exit status 0). A layout clusterlm cannot
        run is still a prediction (for another framework); `reason` says so, and `--emit` refuses it."""
        return self.best is not None and self.best.fits


def plan(req: PlanRequest, *, search: bool = False, top: int = 5, chart: str | Path | None = None,
         emit: str | Path | None = None, overwrite: bool = False) -> PlanResult:
    """Estimate `req`'s layout (or, with `search`, rank every layout clusterlm runs); write the chart
    and, with `emit`, a training config and launch scripts for the plan."""
    resolved = request.resolve(req, search=search)
    workload, cluster = resolved.workload, resolved.cluster
    result = None
    if search:
        result = planner.search(workload, cluster, resolved.execution, top=max(1, top))
        best = result.ranked[0] if result.ranked else None
        shown = result.ranked or ([result.closest] if result.closest else [])
        reason = None
    else:
        best = estimate(workload, cluster, resolved.execution)
        shown = [best]
        reason = not_executable(workload, best.execution)
    out = PlanResult(workload, cluster, best, shown, result, reason, validation.bands())
    if emit is not None:
        _check_emittable(out, Path(emit), overwrite)
    chart = chart or (Path(emit) / "plan.png" if emit else None) or ("plan.png" if search else None)
    if emit is not None:
        out.emitted = write_emit(out.best, emit, resolved.base_run, cluster_ref=_cluster_ref(req))
    if chart and shown:
        out.chart = plan_chart(shown, chart, out.bands)
    return out


def _check_emittable(result: PlanResult, out: Path, overwrite: bool) -> None:
    """Everything that would make `--emit` write a config that cannot train, before anything is written."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    best = result.best
    if best is None:
        raise ConfigError("no layout clusterlm can run fits in memory, so there is nothing to emit; try more "
                          "--gpus, a smaller --batch or --micro-batch, or a smaller model")
    if result.reason is not None:
        raise ConfigError(f"not executable by clusterlm: {result.reason}; --emit writes only layouts "
                          "`clusterlm train` runs (see `plan --search`)")
    if not best.fits:
        raise ConfigError(f"the plan does not fit: {best.memory.total / 2**30:,.1f} GiB per accelerator needed, "
                          f"{best.memory.capacity / 2**30:,.1f} GiB available; try --recompute full, --zero 3, "
                          "more pipeline stages, a smaller --micro-batch, or --search")


def _cluster_ref(req: PlanRequest) -> str:
    """How `launch` finds the plan's cluster spec again: a preset name, `local`, or an absolute path."""
    ref = str(req.cluster)
    return ref if is_local(ref) or not Path(ref).is_file() else str(Path(ref).resolve())


def run_config_from_plan(est: Estimate, base_run: RunConfig | None = None) -> dict:
    """A run config (as a dict) that trains the planned model with the planned layout."""
    layout = trainer_layout(est.workload, est.execution)  # ConfigError when the trainer cannot run it
    data = base_run.model_dump(mode="json") if base_run is not None else {}
    run_steps = run_totals(est).steps
    train = dict(data.get("train", {}))
    steps = math.ceil(run_steps) if run_steps is not None else train.get("max_steps", 1000)
    train.update(layout.train_section())
    train["max_steps"] = int(steps)
    train.pop("grad_accum", None)  # batch_size decides the accumulation
    if train.get("warmup_steps", 50) >= train["max_steps"]:
        train["warmup_steps"] = max(0, train["max_steps"] // 10)
    # The base config's process-group and communication settings stay; its layout does not.
    parallel = {k: v for k, v in data.get("parallel", {}).items() if k not in _LAYOUT_KEYS}
    if not layout.plan.ddp:
        parallel.pop("grad_compression", None)  # compresses DDP's all-reduce only
    parallel.update(layout.parallel_section())
    model = est.workload.model.model_dump(mode="json", exclude_none=True)
    out = {**data, "model": model, "train": train, "parallel": parallel}
    cfg = validate(RunConfig, out)  # what we write must load …
    parallel_plan(cfg, est.num_gpus)  # … and pass the check `clusterlm train` runs before it starts
    return out


def write_emit(est: Estimate, directory: str | Path, base_run: RunConfig | None = None,
               cluster_ref: str | None = None) -> Path:
    """Write config.yaml, plan.json, launch.sh (torchrun) and job.sbatch (Slurm) into `directory`,
    replacing what is there (`_check_emittable` has refused a non-empty one without --overwrite)."""
    out = Path(directory)
    cfg = run_config_from_plan(est, base_run)
    n = est.num_gpus
    gpn = min(est.cluster.gpus_per_node, n)
    nodes = math.ceil(n / gpn)
    days = (est.step_time_s * cfg["train"]["max_steps"]) / 86400
    hours = min(max(1, math.ceil(days * 24 * 1.2)), 24 * 14)  # 20 % margin, capped at two weeks
    time_limit = f"{hours // 24}-{hours % 24:02d}:00:00" if hours >= 24 else f"{hours:02d}:00:00"
    spec = LaunchSpec(config="config.yaml", nodes=nodes, gpus_per_node=gpn, time_limit=time_limit,
                      use_gpus=est.cluster.acc.kind == "gpu", job_name="clusterlm-plan")
    launch = ["#!/bin/bash", "# Run on every node (identical command; c10d assigns node ranks).",
              "# Set the rendezvous endpoint to the first node's address before running.", "set -euo pipefail",
              'cd "$(dirname "$0")"', shell_join(torchrun_commands(spec)[0]), ""]
    plan_json = {**planner.to_json(est), "executable": True, "cluster_spec": cluster_ref}
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        (tmp / PLAN_FILE).write_text(json.dumps(plan_json, indent=2) + "\n", encoding="utf-8")
        (tmp / "launch.sh").write_text("\n".join(launch), encoding="utf-8")
        (tmp / "job.sbatch").write_text(sbatch_script(spec), encoding="utf-8")
        for script in ("launch.sh", "job.sbatch"):
            (tmp / script).chmod(0o755)
    return out


def to_json(result: PlanResult) -> dict[str, Any]:
    """`plan --json`: the plan, whether clusterlm runs it, and with `--search` the ranked layouts and the
    fitting ones clusterlm cannot run (each with the reason)."""
    best = result.best if result.best is not None else result.shown[0]
    payload = {**planner.to_json(best, result.bands), "executable": result.reason is None and result.best is not None,
               "not_executable_reason": result.reason}
    s = result.search
    if s is not None:
        payload["search"] = {
            "evaluated": s.evaluated, "fitting": s.fitting, "not_executable_fitting": s.not_executable_fitting,
            "ranked": [planner.to_json(e, result.bands) for e in s.ranked],
            "not_executable": [{**planner.to_json(e, result.bands), "not_executable_reason": why}
                               for e, why in s.not_executable]}
    return payload


def validation_json() -> dict[str, Any]:
    """`plan --validate --json`: predicted vs published, held-out first."""
    return {"summary": validation.summary(), "bands": validation.bands(),
            "rows": [validation.row_json(r) for r in validation.rows()]}
