"""Parsing Slurm's commands (recorded output) and reporting missing ones."""

from __future__ import annotations

import subprocess

import pytest
from slurm_outputs import SCONTROL_JOB, SINFO

from clusterlm.distributed.slurm_client import (
    SlurmCommandFailed,
    SlurmError,
    job_info,
    list_jobs,
    log_tail,
    parse_scontrol_record,
    partitions,
    run_command,
    submit,
)


def answers(table: dict[str, tuple[int, str, str]]):
    """A runner that answers by command name and records every argv it was given."""
    seen: list[list[str]] = []

    def runner(argv):
        seen.append(list(argv))
        code, out, err = table[argv[0]]
        return subprocess.CompletedProcess(list(argv), code, out, err)

    runner.seen = seen
    return runner


def test_partitions_merge_node_groups():
    parts = partitions(answers({"sinfo": (0, SINFO, "")}))
    assert sorted(parts) == ["cpu", "debug", "gpu"]
    assert parts["cpu"].default and not parts["gpu"].default
    assert not parts["cpu"].has_gpus and parts["gpu"].has_gpus
    assert parts["gpu"].gres == {"gpu:a100:8(S:0-1)", "gpu:h100:8"} and parts["gpu"].nodes == 6
    assert parts["gpu"].max_time == "1-00:00:00" and parts["debug"].max_time == "infinite"


def test_submit_parses_parsable_output():
    runner = answers({"sbatch": (0, "4321;clusterA\n", "")})
    assert submit("job.sbatch", runner) == "4321"
    assert runner.seen == [["sbatch", "--parsable", "job.sbatch"]]
    with pytest.raises(SlurmCommandFailed, match="sbatch --parsable failed .exit 1.: sbatch: error: Invalid account"):
        submit("job.sbatch", answers({"sbatch": (1, "", "sbatch: error: Batch job submission failed\n"
                                                        "sbatch: error: Invalid account")}))
    with pytest.raises(SlurmCommandFailed, match="no job id"):
        submit("job.sbatch", answers({"sbatch": (0, "Submitted batch job\n", "")}))


def test_list_jobs_from_squeue():
    out = "1234|llm run|RUNNING|12:07|1:00:00|2|gpu[07-08]\n1240|eval|PENDING|0:00|30:00|1|(Priority)\n"
    runner = answers({"squeue": (0, out, "")})
    jobs = list_jobs(runner)
    assert [(j.job_id, j.state, j.nodelist, j.reason) for j in jobs] == [
        ("1234", "RUNNING", "gpu[07-08]", ""), ("1240", "PENDING", "", "Priority")]
    everyone = answers({"squeue": (0, "", "")})
    assert list_jobs(everyone, all_users=True) == []
    assert "--me" in runner.seen[0] and "--me" not in everyone.seen[0]


def test_scontrol_record_keeps_spaces_in_values():
    rec = parse_scontrol_record(SCONTROL_JOB)
    assert rec["JobName"] == "llm run" and rec["StdOut"] == "/home/alice/my jobs/llm-1234.out"
    assert rec["NodeList"] == "gpu[07-08]" and rec["Power"] == ""


def test_job_info_from_the_controller():
    job = job_info("1234", answers({"scontrol": (0, SCONTROL_JOB + "\n", "")}))
    assert (job.state, job.elapsed, job.time_limit, job.nodes, job.nodelist, job.restarts) == (
        "RUNNING", "00:12:07", "01:00:00", "2", "gpu[07-08]", 1)
    assert job.stdout.endswith("llm-1234.out") and job.reason == "" and job.source == "scontrol"


def test_finished_job_falls_back_to_sacct():
    gone = (1, "", "slurm_load_jobs error: Invalid job id specified")
    sacct = (0, "1234|llm|COMPLETED|01:02:03|02:00:00|2|gpu[07-08]|0:0\n", "")
    job = job_info("1234", answers({"scontrol": gone, "sacct": sacct}))
    assert (job.state, job.elapsed, job.nodes, job.source) == ("COMPLETED", "01:02:03", "2", "sacct")
    disabled = (0, "Slurm accounting storage is disabled\n", "")
    with pytest.raises(SlurmError, match="job 1234 is unknown.*Invalid job id.*accounting is not available"):
        job_info("1234", answers({"scontrol": gone, "sacct": disabled}))


def test_bad_job_ids_never_reach_a_command():
    runner = answers({})
    for bad in ("12; rm -rf /", "--all", "12\n13"):
        with pytest.raises(SlurmError, match="job id must look like 12345"):
            job_info(bad, runner)
    assert runner.seen == []


def test_missing_command_is_reported_by_name(fake_bin):
    fake_bin(only=True)
    with pytest.raises(SlurmError, match="'squeue' not found on PATH.*local-slurm.sh up"):
        run_command(["squeue"])


def test_log_tail_shows_what_a_terminal_would(tmp_path):
    log = tmp_path / "job.out"
    log.write_text("".join(f"line {i}\n" for i in range(30)) + "step 1\rstep 2\rstep 3\n\n")
    assert log_tail(log, 3) == ["line 28", "line 29", "step 3"]
    assert log_tail(tmp_path / "missing.out") == [] and log_tail("") == []
