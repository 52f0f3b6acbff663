"""torchrun command lines and Slurm batch scripts for a training config (pure functions).

Single node:   torchrun --standalone --nproc-per-node G -m clusterlm train CONFIG ...
Multi-node:    one `torchrun` agent per node, c10d rendezvous at the head node
               (--nnodes N --rdzv-backend c10d --rdzv-endpoint HEAD:PORT --rdzv-id JOB).
Slurm:         an sbatch script: one task per node, `srun torchrun …` with the first node of
               the allocation as rendezvous endpoint (or, with launcher "srun", one task per
               rank running `clusterlm train` itself), NCCL environment, a warning signal before
               the time limit that makes training checkpoint and the job requeue itself, and the
               same script run with plain `bash` outside Slurm starts the N agents on 127.0.0.1
               (a loopback "cluster" for testing on one machine).

Used by `clusterlm launch` and by `clusterlm plan --emit`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from clusterlm.errors import UsageError

DEFAULT_PORT = 29500
# NCCL settings every multi-node job wants: surface errors instead of hanging, log warnings.
NCCL_ENV = {
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    "NCCL_DEBUG": "WARN",
}


# Slurm's --time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_TIME_RE = re.compile(r"(?:(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?|(\d+)(?::(\d+)(?::(\d+))?)?)")
# Names that go into `#SBATCH` lines: no spaces, newlines or shell metacharacters.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_MEM_RE = re.compile(r"\d+[KMGT]?")
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LAUNCHERS = ("torchrun", "srun")


def parse_time_limit(text: str) -> int:
    """Slurm's --time value → seconds (`90` is 90 minutes, `1-12` is 36 hours)."""
    match = _TIME_RE.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"time limit must be minutes, HH:MM:SS or D-HH:MM:SS (Slurm's --time), got {text!r}")
    days, hours, mins, secs, first, second, third = (int(g) if g else 0 for g in match.groups())
    if match.group(1) is not None:  # D-HH[:MM[:SS]]
        return ((days * 24 + hours) * 60 + mins) * 60 + secs
    if match.group(7) is not None:  # HH:MM:SS
        return (first * 60 + second) * 60 + third
    return first * 60 + second  # MM or MM:SS


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
    time_limit: str = "24:00:00"  # Slurm --time (HH:MM:SS, D-HH:MM:SS, minutes, ...)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None  # Slurm --mem per node: 64G, 512000M, 0 (= all of the node's memory)
    use_gpus: bool = True  # False: CPU-only nodes (no --gpus-per-node request)
    # "torchrun": one task per node running a torchrun agent (c10d rendezvous, elastic restarts);
    # "srun": one Slurm task per rank running `clusterlm train` itself (distributed/slurm_env.py).
    launcher: str = "torchrun"
    signal_lead_s: int = 120  # Slurm warns the batch script (USR1) this long before the time limit; 0: no warning
    requeue: bool = True  # after that warning the job checkpoints and requeues itself
    env: dict[str, str] = field(default_factory=dict)
    # Interpreters the script uses unless $PYTHON / $TORCHRUN say otherwise (`clusterlm launch`
    # puts its own venv's here, so the job runs the same installation).
    python: str = "python3"
    torchrun: str = "torchrun"
    # What each worker runs; tests substitute a tiny script for `-m clusterlm train`.
    entry: tuple[str, ...] = ("-m", "clusterlm", "train")

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise UsageError(f"--nodes and --gpus-per-node must be ≥ 1, got {self.nodes} and {self.gpus_per_node}")
        if not 0 < self.rdzv_port < 65536:
            raise UsageError(f"rendezvous port must be in 1..65535, got {self.rdzv_port}")
        if self.max_restarts < 0:
            raise UsageError(f"--max-restarts must be ≥ 0, got {self.max_restarts}")
        if self.launcher not in LAUNCHERS:
            raise UsageError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        if self.signal_lead_s < 0 or (self.cpus_per_task is not None and self.cpus_per_task < 1):
            raise UsageError("--signal-lead must be ≥ 0 seconds and --cpus-per-task ≥ 1")
        limit_s = parse_time_limit(self.time_limit)
        if limit_s <= self.signal_lead_s:
            raise UsageError(f"time limit {self.time_limit} leaves no time before the checkpoint warning sent "
                             f"{self.signal_lead_s} s before it; raise --time or lower --signal-lead")
        for flag, value in (("--job-name", self.job_name), ("--partition", self.partition),
                            ("--account", self.account), ("--qos", self.qos), ("--rdzv-id", self.rdzv_id)):
            if value is not None and not _NAME_RE.fullmatch(value):
                raise UsageError(f"{flag} {value!r} may only contain letters, digits and . _ + - "
                                 "(no spaces, newlines or shell characters)")
        if self.mem is not None and not _MEM_RE.fullmatch(self.mem):
            raise UsageError(f"--mem must look like 64G, 512000M or 0 (all of a node's memory), got {self.mem!r}")
        for key, value in self.env.items():
            if not _ENV_KEY_RE.fullmatch(key) or "\n" in value or "\0" in value:
                raise UsageError(f"environment variable {key!r} must be a shell name with a one-line value")

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def time_limit_s(self) -> int:
        return parse_time_limit(self.time_limit)


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
    lines = [*_sbatch_header(spec), "", "set -euo pipefail", ""]
    for key, value in {**NCCL_ENV, **spec.env}.items():
        lines.append(f"export {key}={shlex.quote(value)}")
    lines += [f"PORT=${{RDZV_PORT:-{spec.rdzv_port}}}",
              f"TORCHRUN=${{TORCHRUN:-{shlex.quote(spec.torchrun)}}}",
              f"PYTHON=${{PYTHON:-{shlex.quote(spec.python)}}}",
              "",
              'if [ -n "${SLURM_JOB_ID:-}" ]; then',
              *_indent(_slurm_branch(spec)),
              "else",
              *_indent(_loopback_branch(spec)),
              "fi",
              ""]
    return "\n".join(lines)


def _sbatch_header(spec: LaunchSpec) -> list[str]:
    # torchrun: one agent per node spawns the workers; srun: one Slurm task per rank.
    tasks_per_node = 1 if spec.launcher == "torchrun" else spec.gpus_per_node
    options: list[tuple[str, object]] = [
        ("job-name", spec.job_name), ("nodes", spec.nodes), ("ntasks-per-node", tasks_per_node),
        ("gpus-per-node", spec.gpus_per_node if spec.use_gpus else None), ("cpus-per-task", spec.cpus_per_task),
        ("mem", spec.mem), ("time", spec.time_limit), ("partition", spec.partition), ("account", spec.account),
        ("qos", spec.qos), ("output", "%x-%j.out"),
        ("open-mode", "append"),  # a requeued job appends to the same log
    ]
    lines = ["#!/bin/bash"] + [f"#SBATCH --{name}={value}" for name, value in options if value is not None]
    if spec.requeue:
        lines.append("#SBATCH --requeue")
    if spec.signal_lead_s:
        # B: the warning goes to this script only, which asks the training processes to stop (below).
        lines.append(f"#SBATCH --signal=B:USR1@{spec.signal_lead_s}")
    return lines


def _slurm_branch(spec: LaunchSpec) -> list[str]:
    """Run the job step in the background so this shell can take signals while it trains.

    A signal to the batch shell (Slurm's USR1 warning before the time limit, or SIGTERM on
    preemption/cancel) is passed to every process of the job step as SIGTERM with `scancel`
    (not to `srun` itself, which would kill the step at once). The trainer then finishes its
    step, writes a checkpoint and exits non-zero. After a USR1 warning the script requeues
    the job; the same command then resumes from the checkpoint in the same run dir.
    """
    if spec.launcher == "torchrun":
        agent = _agent_command(spec)
        step = f"srun --nodes={spec.nodes} --ntasks-per-node=1 {agent}"
        setup = ["# The first node of the allocation hosts the c10d rendezvous store.",
                 'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                 'RDZV_ID="$SLURM_JOB_ID"',
                 "# On SIGTERM torchrun gives its workers this long to checkpoint before SIGKILL (default 30 s).",
                 "export TORCH_ELASTIC_SHUTDOWN_TIMEOUT="
                 f"${{TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-{max(spec.signal_lead_s, 30)}}}"]
    else:
        step = f'srun "$PYTHON" {shell_join(_train_args(spec))}'
        setup = ["# Each task finds its rank and rank 0's node in the Slurm environment (no torchrun).",
                 "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"]
    requeue = ['if [ "$stop_signal" = USR1 ] && [ "$status" -ne 0 ]; then',
               '    echo "clusterlm: checkpointed before the time limit; requeueing job $SLURM_JOB_ID" >&2',
               '    scontrol requeue "$SLURM_JOB_ID"',
               "fi"] if spec.requeue else []
    return [*setup,
            'stop_signal=""',
            "on_signal() {",
            '    stop_signal=$1',
            '    echo "clusterlm: $1 at $(date +%T): training checkpoints after this step and stops" >&2',
            '    scancel --signal=TERM "$SLURM_JOB_ID" || true  # every job step\'s processes, not this shell',
            "}",
            "trap 'on_signal USR1' USR1",
            "trap 'on_signal TERM' TERM",
            f"{step} &",
            "step_pid=$!",
            "# A trapped signal interrupts `wait`; wait again until the job step has ended.",
            'while kill -0 "$step_pid" 2>/dev/null; do wait "$step_pid" || true; done',
            'status=0; wait "$step_pid" || status=$?',
            *requeue,
            'exit "$status"']


def _agent_command(spec: LaunchSpec) -> str:
    """One node's torchrun agent, rendezvous at $HEAD_NODE:$PORT (set by the script)."""
    return '"$TORCHRUN" ' + shell_join(multi_node_command(spec, endpoint="$HEAD_NODE:$PORT", rdzv_id="$RDZV_ID")[1:])


def _loopback_branch(spec: LaunchSpec) -> list[str]:
    agent = _agent_command(spec)
    return [f"# Not under Slurm: a loopback \"cluster\" of {spec.nodes} node agents on this machine.",
            "HEAD_NODE=127.0.0.1",
            'RDZV_ID="loopback-$$"',
            "pids=()",
            f"for node in $(seq 1 {spec.nodes}); do",
            f"    {agent} &",
            "    pids+=($!)",
            "done",
            "status=0",
            'for pid in "${pids[@]}"; do wait "$pid" || status=$?; done',
            'exit "$status"']


def _indent(lines: list[str]) -> list[str]:
    return [f"    {line}" if line else line for line in lines]
