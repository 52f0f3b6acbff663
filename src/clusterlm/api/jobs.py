"""`clusterlm jobs`: your Slurm jobs, or one job's state and the tail of its log.

The answers come from Slurm's own commands (`distributed/slurm_client.py`): `squeue` for the
list, `scontrol show job` while the controller remembers a job, `sacct` after that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from clusterlm.distributed.slurm_client import JobInfo, job_info, list_jobs, log_tail


@dataclass(frozen=True)
class JobReport:
    job: JobInfo
    log_tail: list[str]  # the last lines of the job's log (empty when Slurm does not say where it is)

    def as_dict(self) -> dict:
        return {**asdict(self.job), "log_tail": self.log_tail}


def jobs(all_users: bool = False) -> list[JobInfo]:
    """Pending and running jobs: yours, or every user's."""
    return list_jobs(all_users=all_users)


def job(job_id: str, lines: int = 20) -> JobReport:
    """One job's state, elapsed time, nodes, requeues, exit code, and its log's last `lines` lines."""
    info = job_info(job_id)
    return JobReport(info, log_tail(info.stdout, lines) if info.stdout else [])
