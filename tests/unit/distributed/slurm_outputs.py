"""Slurm command output recorded from Slurm 22.05 (inputs for the parsers' tests)."""

# `sinfo --noheader --format=%P|%G|%l|%D|%c` on a cluster with a default CPU partition and a
# GPU partition whose nodes come in two groups (sinfo prints one line per group).
SINFO = """\
cpu*|(null)|2-00:00:00|12|64
gpu|gpu:a100:8(S:0-1)|1-00:00:00|4|128
gpu|gpu:h100:8|1-00:00:00|2|96
debug|(null)|infinite|1|8
"""

# `scontrol show job --oneliner 1234` of a requeued, running job (Slurm 22.05).
SCONTROL_JOB = (
    "JobId=1234 JobName=llm run UserId=alice(1000) GroupId=alice(1000) MCS_label=N/A Priority=1 Nice=0 "
    "Account=proj QOS=normal JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=1 BatchFlag=2 "
    "Reboot=0 ExitCode=0:0 RunTime=00:12:07 TimeLimit=01:00:00 TimeMin=N/A SubmitTime=2026-11-30T23:01:20 "
    "Partition=gpu NodeList=gpu[07-08] BatchHost=gpu07 NumNodes=2 NumCPUs=16 NumTasks=2 "
    "Command=/home/alice/my jobs/job.sbatch WorkDir=/home/alice/my jobs StdErr=/home/alice/my jobs/llm-1234.out "
    "StdIn=/dev/null StdOut=/home/alice/my jobs/llm-1234.out Power="
)
