"""Slurm's client commands (`sinfo`, `sbatch`, `squeue`, `scontrol`, `sacct`), run and parsed.

Plain `sbatch --parsable` rather than submitit: clusterlm already writes a complete batch
script (the same one `clusterlm plan --emit` writes and a user can read, edit and submit by
hand), and submitit would pickle a Python callable into its own wrapper script instead —
a second, opaque path, plus a dependency. Parsing the commands' machine-readable output
(`--parsable`, `-h -o 'a|b|c'`, `scontrol -o`) is all the querying we need.

Every function takes a `runner` (argv → CompletedProcess) so tests can feed recorded output;
by default it runs the real command. A command that is not installed is a `SlurmError` that
says so, never a traceback.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clusterlm.errors import DistributedError

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]
_JOB_ID_RE = re.compile(r"\d+(?:_\d+)?(?:\.\w+)?")
NOT_INSTALLED_HINT = ("run this on a Slurm cluster's login node, or start a local test cluster with "
                      "'scripts/local-slurm.sh up'")


class SlurmError(DistributedError):
    """Slurm is missing, or refuses what we ask (unknown partition, bad job id)."""


class SlurmCommandFailed(SlurmError):
    """A Slurm command failed at run time (the controller is down, sbatch rejected the job)."""

    exit_code = 1


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess:
    """Run a Slurm client command; a missing command is a SlurmError naming it."""
    if shutil.which(argv[0]) is None:
        raise SlurmError(f"'{argv[0]}' not found on PATH: Slurm's client commands are not installed here; "
                         f"{NOT_INSTALLED_HINT}")
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)


def _checked(runner: Runner, argv: Sequence[str]) -> str:
    proc = runner(argv)
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip().splitlines()
        raise SlurmCommandFailed(f"{' '.join(argv[:2])} failed (exit {proc.returncode}): "
                                 f"{message[-1] if message else 'no output'}")
    return proc.stdout


# ------------------------------------------------------------------ partitions
@dataclass
class Partition:
    name: str
    default: bool = False
    gres: set[str] = field(default_factory=set)  # generic resources of its nodes: {"gpu:a100:8"}
    max_time: str = "infinite"  # Slurm's MaxTime ("infinite", "1-00:00:00", ...)
    nodes: int = 0
    cpus_per_node: int = 0

    @property
    def has_gpus(self) -> bool:
        return any(g.split(":")[0] == "gpu" for g in self.gres)


def partitions(runner: Runner = run_command) -> dict[str, Partition]:
    """Every partition `sinfo` knows, merged over its node groups."""
    out = _checked(runner, ["sinfo", "--noheader", "--format=%P|%G|%l|%D|%c"])
    found: dict[str, Partition] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        name, gres, max_time, nodes, cpus = (line.split("|") + [""] * 5)[:5]
        default = name.endswith("*")
        name = name.rstrip("*")
        part = found.setdefault(name, Partition(name, default=default, max_time=max_time.strip()))
        part.gres |= {g.strip() for g in re.split(r",(?![^(]*\))", gres) if g.strip() and g.strip() != "(null)"}
        part.nodes += int(nodes) if nodes.strip().isdigit() else 0
        part.cpus_per_node = max(part.cpus_per_node, int(re.sub(r"\D", "", cpus) or 0))
    return found


# ------------------------------------------------------------------ submission
def submit(script: Path, runner: Runner = run_command, workdir: Path | None = None) -> str:
    """`sbatch --parsable SCRIPT` → the job id (`12345`, or `12345;cluster` → `12345`)."""
    argv = ["sbatch", "--parsable"] + ([f"--chdir={workdir}"] if workdir else []) + [str(script)]
    out = _checked(runner, argv).strip().splitlines()
    job_id = out[-1].split(";")[0].strip() if out else ""
    if not _JOB_ID_RE.fullmatch(job_id):
        raise SlurmCommandFailed(f"sbatch printed no job id (got {out[-1] if out else 'nothing'!r})")
    return job_id


# ------------------------------------------------------------------ job queries
@dataclass
class JobInfo:
    job_id: str
    name: str = ""
    state: str = ""  # PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, PREEMPTED, REQUEUED, ...
    reason: str = ""  # why pending, or None
    elapsed: str = ""  # [D-]HH:MM:SS
    time_limit: str = ""
    nodes: str = ""  # count
    nodelist: str = ""
    restarts: int = 0  # requeues so far
    exit_code: str = ""  # "status:signal"
    stdout: str = ""  # log path (absolute), when Slurm still knows it
    source: str = ""  # which command answered: squeue, scontrol or sacct


def check_job_id(job_id: str) -> str:
    if not _JOB_ID_RE.fullmatch(job_id):
        raise SlurmError(f"job id must look like 12345 (or 12345_7, 12345.0), got {job_id!r}")
    return job_id


def list_jobs(runner: Runner = run_command, all_users: bool = False) -> list[JobInfo]:
    """Pending and running jobs (this user's unless `all_users`), from `squeue`."""
    argv = ["squeue", "--noheader", "--format=%i|%j|%T|%M|%l|%D|%R"] + ([] if all_users else ["--me"])
    jobs = []
    for line in _checked(runner, argv).splitlines():
        if not line.strip():
            continue
        job_id, name, state, elapsed, limit, nodes, where = (line.split("|") + [""] * 7)[:7]
        pending = state == "PENDING"
        jobs.append(JobInfo(job_id=job_id.strip(), name=name, state=state, elapsed=elapsed, time_limit=limit,
                            nodes=nodes, reason=where.strip("()") if pending else "",
                            nodelist="" if pending else where, source="squeue"))
    return jobs


def parse_scontrol_record(line: str) -> dict[str, str]:
    """`scontrol show job -o` prints one `Key=Value Key=Value …` line; values may contain spaces
    (commands, paths), so a value runs until the next ` Key=`."""
    keys = list(re.finditer(r"(?:^|\s)([A-Za-z][\w/:]*)=", line))
    record = {}
    for i, match in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(line)
        record[match.group(1)] = line[match.end():end].strip()
    return record


def job_info(job_id: str, runner: Runner = run_command) -> JobInfo:
    """One job: from the controller while it remembers the job (`scontrol`), else accounting (`sacct`)."""
    check_job_id(job_id)
    proc = runner(["scontrol", "show", "job", "--oneliner", job_id])
    if proc.returncode == 0 and proc.stdout.strip():
        rec = parse_scontrol_record(proc.stdout.strip().splitlines()[0])
        return JobInfo(job_id=rec.get("JobId", job_id), name=rec.get("JobName", ""), state=rec.get("JobState", ""),
                       reason=_none(rec.get("Reason", "")), elapsed=rec.get("RunTime", ""),
                       time_limit=rec.get("TimeLimit", ""), nodes=rec.get("NumNodes", ""),
                       nodelist=_none(rec.get("NodeList", "")), restarts=int(rec.get("Restarts", "0") or 0),
                       exit_code=rec.get("ExitCode", ""), stdout=rec.get("StdOut", ""), source="scontrol")
    return _job_from_sacct(job_id, runner, (proc.stderr or proc.stdout).strip())


def _job_from_sacct(job_id: str, runner: Runner, scontrol_said: str) -> JobInfo:
    fields = "JobID,JobName,State,Elapsed,Timelimit,NNodes,NodeList,ExitCode"
    try:
        proc = runner(["sacct", "--noheader", "--parsable2", "--allocations", f"--format={fields}", "-j", job_id])
    except SlurmError:
        proc = None
    text = (proc.stdout + proc.stderr).strip() if proc is not None else ""
    if proc is None or proc.returncode != 0 or "accounting storage is disabled" in text or not proc.stdout.strip():
        why = "Slurm accounting is not available" if proc is None or "disabled" in text else "sacct has no record"
        raise SlurmError(f"job {job_id} is unknown: the controller does not know it "
                         f"({scontrol_said or 'no answer'}) and {why}; check the job id")
    job, name, state, elapsed, limit, nodes, nodelist, exit_code = (proc.stdout.splitlines()[0].split("|")
                                                                    + [""] * 8)[:8]
    return JobInfo(job_id=job, name=name, state=state.split()[0] if state else "", elapsed=elapsed,
                   time_limit=limit, nodes=nodes, nodelist=_none(nodelist), exit_code=exit_code, source="sacct")


def _none(value: str) -> str:
    return "" if value in ("(null)", "None", "") else value


def log_tail(path: str | Path, lines: int = 20) -> list[str]:
    """The last `lines` lines of a job's log (empty when it does not exist yet)."""
    p = Path(path)
    if not path or not p.is_file():
        return []
    with p.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 64 * 1024))  # enough for 20 lines of progress output
        text = f.read().decode("utf-8", errors="replace")
    # Progress bars redraw with carriage returns; keep what a terminal would show last.
    shown = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
    while shown and not shown[-1]:
        shown.pop()
    return shown[-lines:]
