"""torchrun command lines and Slurm batch scripts for a training config (pure functions).

Single node:   torchrun --standalone --nproc-per-node G -m clusterlm train CONFIG ...
Multi-node:    one `torchrun` agent per node, c10d rendezvous at the head node
               (--nnodes N --rdzv-backend c10d --rdzv-endpoint HEAD:PORT --rdzv-id JOB).
Slurm:         an sbatch script: one task per node, `srun torchrun …` with the first node of
               the allocation as rendezvous endpoint, NCCL environment, and the same script run
               with plain `bash` outside Slurm starts the N agents on 127.0.0.1 (a loopback
               "cluster" for testing on one machine).

Used by `clusterlm launch` and by `clusterlm plan --emit`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

DEFAULT_PORT = 29500
# NCCL settings every multi-node job wants: surface errors instead of hanging, log warnings.
NCCL_ENV = {
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    "NCCL_DEBUG": "WARN",
}


@dataclass(frozen=True)
class LaunchSpec:
    config: str  # run config YAML passed to `clusterlm train`
    nodes: int = 1
    gpus_per_node: int = 1  # processes per node
    overrides: tuple[str, ...] = ()
    rdzv_host: str = "127.0.0.1"
    rdzv_port: int = DEFAULT_PORT
    rdzv_id: str = "clusterlm"
    max_restarts: int = 0
    job_name: str = "clusterlm"
    time_limit: str = "24:00:00"  # Slurm HH:MM:SS (or D-HH:MM:SS)
    partition: str | None = None
    account: str | None = None
    cpus_per_task: int | None = None
    use_gpus: bool = True  # False: CPU-only nodes (no --gpus-per-node request)
    env: dict[str, str] = field(default_factory=dict)
    # What each worker runs; tests substitute a tiny script for `-m clusterlm train`.
    entry: tuple[str, ...] = ("-m", "clusterlm", "train")

    def __post_init__(self) -> None:
        from clusterlm.errors import UsageError

        if self.nodes < 1 or self.gpus_per_node < 1:
            raise UsageError(f"--nodes and --gpus-per-node must be ≥ 1, got {self.nodes} and {self.gpus_per_node}")
        if not 0 < self.rdzv_port < 65536:
            raise UsageError(f"rendezvous port must be in 1..65535, got {self.rdzv_port}")
        if not re.fullmatch(r"(\d+-)?\d{1,3}:\d{2}:\d{2}", self.time_limit):
            raise UsageError(f"time limit must look like HH:MM:SS or D-HH:MM:SS, got '{self.time_limit}'")
        if self.max_restarts < 0:
            raise UsageError(f"--max-restarts must be ≥ 0, got {self.max_restarts}")

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node


def _train_args(spec: LaunchSpec) -> list[str]:
    return [*spec.entry, spec.config, *spec.overrides]


def single_node_command(spec: LaunchSpec) -> list[str]:
    """`torchrun --standalone` for one node (rendezvous on a free local port)."""
    return ["torchrun", "--standalone", f"--nproc-per-node={spec.gpus_per_node}",
            f"--max-restarts={spec.max_restarts}", *_train_args(spec)]


def multi_node_command(spec: LaunchSpec, endpoint: str | None = None, rdzv_id: str | None = None) -> list[str]:
    """The command every node runs (identical on all nodes: c10d assigns node ranks)."""
    endpoint = endpoint or f"{spec.rdzv_host}:{spec.rdzv_port}"
    return ["torchrun", f"--nnodes={spec.nodes}", f"--nproc-per-node={spec.gpus_per_node}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={rdzv_id or spec.rdzv_id}",
            f"--max-restarts={spec.max_restarts}", *_train_args(spec)]


def torchrun_commands(spec: LaunchSpec) -> list[list[str]]:
    """One command per node (a single `--standalone` command for one node)."""
    if spec.nodes == 1:
        return [single_node_command(spec)]
    return [multi_node_command(spec) for _ in range(spec.nodes)]


def shell_join(cmd: list[str]) -> str:
    """Quote for a shell, leaving `$VAR` references (also inside `--opt=$VAR`) expandable."""
    return " ".join(c if "$" in c and re.fullmatch(r"[-\w=.:$]+", c) else shlex.quote(c) for c in cmd)


def sbatch_script(spec: LaunchSpec) -> str:
    """A Slurm batch script; outside Slurm, `bash script` runs the nodes as local processes."""
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name={spec.job_name}",
             f"#SBATCH --nodes={spec.nodes}",
             "#SBATCH --ntasks-per-node=1"]  # one torchrun agent per node; it spawns the workers
    if spec.use_gpus:
        lines.append(f"#SBATCH --gpus-per-node={spec.gpus_per_node}")
    lines += [
             f"#SBATCH --time={spec.time_limit}",
             "#SBATCH --output=%x-%j.out"]
    if spec.cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={spec.cpus_per_task}")
    if spec.partition:
        lines.append(f"#SBATCH --partition={spec.partition}")
    if spec.account:
        lines.append(f"#SBATCH --account={spec.account}")
    lines += ["", "set -euo pipefail", ""]
    for key, value in {**NCCL_ENV, **spec.env}.items():
        lines.append(f"export {key}={shlex.quote(value)}")
    agent = shell_join(["$TORCHRUN", *multi_node_command(spec, endpoint="$HEAD_NODE:$PORT", rdzv_id="$RDZV_ID")[1:]])
    lines += [
        f"PORT=${{RDZV_PORT:-{spec.rdzv_port}}}",
        "TORCHRUN=${TORCHRUN:-torchrun}",
        "",
        'if [ -n "${SLURM_JOB_ID:-}" ]; then',
        "    # The first node of the allocation hosts the c10d rendezvous store.",
        '    HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        '    RDZV_ID="$SLURM_JOB_ID"',
        f"    srun --nodes={spec.nodes} --ntasks-per-node=1 {agent}",
        "else",
        f"    # Not under Slurm: a loopback \"cluster\" of {spec.nodes} node agents on this machine.",
        "    HEAD_NODE=127.0.0.1",
        '    RDZV_ID="loopback-$$"',
        "    pids=()",
        f"    for node in $(seq 1 {spec.nodes}); do",
        f"        {agent} &",
        "        pids+=($!)",
        "    done",
        "    status=0",
        '    for pid in "${pids[@]}"; do wait "$pid" || status=$?; done',
        '    exit "$status"',
        "fi",
        ""]
    return "\n".join(lines)
