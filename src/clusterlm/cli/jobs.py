"""Show Slurm jobs: `clusterlm jobs` lists your pending and running jobs; `clusterlm jobs ID`
shows one job's state, elapsed time, nodes, requeues and the tail of its log.

The answers come from Slurm's own commands: `squeue` for the list, `scontrol show job` while
the controller remembers a job, `sacct` after that (when accounting is enabled).

Examples:
  clusterlm jobs
  clusterlm jobs 12345 --lines 40
  clusterlm jobs 12345 --json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", nargs="?", metavar="ID", help="a job id (default: list your jobs)")
    parser.add_argument("--lines", type=int, default=20, help="log lines to show for one job (default 20)")
    parser.add_argument("--all", action="store_true", help="list every user's jobs")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from clusterlm.api import jobs as api

    if args.job_id is None:
        jobs = api.jobs(all_users=args.all)
        if args.json:
            print(json.dumps([asdict(j) for j in jobs], indent=2))
            return 0
        print(f"{'JOBID':<12} {'NAME':<20} {'STATE':<11} {'ELAPSED':>11} {'NODES':>5}  NODELIST(REASON)")
        for j in jobs:
            where = j.nodelist or f"({j.reason})"
            print(f"{j.job_id:<12} {j.name[:20]:<20} {j.state:<11} {j.elapsed:>11} {j.nodes:>5}  {where}")
        if not jobs:
            print("(no pending or running jobs)")
        return 0
    report = api.job(args.job_id, args.lines)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    job, tail = report.job, report.log_tail
    state = job.state + (f" ({job.reason})" if job.reason else "")
    print(f"job          {job.job_id}  {job.name}")
    print(f"state        {state}" + (f", requeued {job.restarts}×" if job.restarts else ""))
    print(f"elapsed      {job.elapsed or 'n/a'} of {job.time_limit or 'n/a'}")
    print(f"nodes        {job.nodes or 'n/a'}  {job.nodelist}")
    if job.exit_code:
        print(f"exit code    {job.exit_code}")
    print(f"log          {job.stdout or 'unknown (' + job.source + ' does not report it)'}")
    if tail:
        print(f"--- last {len(tail)} line(s) of the log")
        print("\n".join(tail))
    return 0
