"""Checks before a Slurm job is written or submitted, and `clusterlm launch --submit` / `clusterlm jobs`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from slurm_outputs import SCONTROL_JOB, SINFO

from clusterlm.cli.main import main
from clusterlm.distributed.launch import LaunchSpec, parse_time_limit
from clusterlm.distributed.slurm_client import Partition, SlurmError
from clusterlm.distributed.slurm_submit import check_partition, check_time_budget, measured_step_time_s


@pytest.mark.parametrize("text,seconds", [
    ("90", 5400), ("05:30", 330), ("01:00:00", 3600), ("1-12", 129600), ("2-00:30", 174600),
    ("1-00:00:10", 86410),
])
def test_slurm_time_formats(text, seconds):
    assert parse_time_limit(text) == seconds


def test_time_limit_must_hold_a_checkpoint_interval():
    spec = LaunchSpec("run.yaml", time_limit="00:30:00")
    check_time_budget(spec, ckpt_every=200, step_time_s=None)  # unknown step time: nothing to check
    check_time_budget(spec, ckpt_every=200, step_time_s=5.0)  # 200 × 5 s = 17 min < 30 min
    with pytest.raises(SlurmError, match=r"shorter than one checkpoint interval: train.ckpt_every=200 steps × "
                                         r"10 s/step \(measured\) = 33 min; lower train.ckpt_every or raise --time"):
        check_time_budget(spec, ckpt_every=200, step_time_s=10.0, source="measured")
    with pytest.raises(SlurmError, match="longer than the 120 s warning"):
        check_time_budget(spec, ckpt_every=1, step_time_s=150.0)


def test_warning_must_come_after_the_start():
    with pytest.raises(Exception, match="leaves no time before the checkpoint warning"):
        LaunchSpec("run.yaml", time_limit="2")  # 2 minutes = the 120 s warning lead


def parts() -> dict[str, Partition]:
    return {"cpu": Partition("cpu", default=True, max_time="2-00:00:00"),
            "gpu": Partition("gpu", gres={"gpu:a100:8"}, max_time="1-00:00:00")}


def test_partition_checks():
    assert check_partition(LaunchSpec("r.yaml", use_gpus=False), parts()).name == "cpu"  # the default one
    assert check_partition(LaunchSpec("r.yaml", partition="gpu"), parts()).name == "gpu"
    with pytest.raises(SlurmError, match="unknown partition 'gpus'; this cluster has: cpu, gpu"):
        check_partition(LaunchSpec("r.yaml", partition="gpus"), parts())
    with pytest.raises(SlurmError, match="partition 'cpu' has none; pass --cpu .* or choose a GPU partition .gpu."):
        check_partition(LaunchSpec("r.yaml", gpus_per_node=4), parts())
    with pytest.raises(SlurmError, match="exceeds partition 'gpu' maximum 1-00:00:00"):
        check_partition(LaunchSpec("r.yaml", partition="gpu", time_limit="1-00:00:01"), parts())


@pytest.mark.parametrize("field,value", [
    ("job_name", "run\n#SBATCH --account=other"), ("partition", "gpu;rm -rf ~"), ("account", "a b"),
    ("qos", "$(id)"), ("mem", "64GB"),
])
def test_fields_that_would_break_the_script_are_refused(field, value):
    with pytest.raises(Exception, match="may only contain|--mem must look like"):
        LaunchSpec("run.yaml", **{field: value})


def test_measured_step_time():
    assert measured_step_time_s([]) is None
    records = [{"kind": "train", "step_time_s": t} for t in (9.0, 1.0, 2.0)] + [{"kind": "val", "step": 3}]
    assert measured_step_time_s(records) == 2.0


# ------------------------------------------------------------------ the CLI, with stand-in commands
@pytest.fixture
def run_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": {"preset": "tiny"}, "train": {
        "max_steps": 10, "warmup_steps": 1, "ckpt_every": 100, "out_dir": str(tmp_path / "run")}}))
    return path


def launch(*args: str) -> int:
    return main(["launch", "--slurm", "--submit", "--out", "job.sbatch", *args])


def test_submit_without_sbatch_fails_before_writing(run_yaml, fake_bin, capsys):
    fake_bin(only=True)
    assert launch("--cpu", str(run_yaml)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 'sbatch' not found on PATH") and err.count("\n") == 1
    assert not Path("job.sbatch").exists()


@pytest.mark.parametrize("args,message", [
    (["--partition", "nope"], "unknown partition 'nope'"),
    ([], "GPUs requested (--gpus-per-node 1) but partition 'cpu' has none"),
    (["--cpu", "--step-time-s", "60", "--time", "01:00:00"], "shorter than one checkpoint interval"),
    (["--cpu", "--job-name", "a;b"], "--job-name 'a;b' may only contain"),
])
def test_bad_jobs_are_refused_before_submission(run_yaml, fake_bin, capsys, args, message):
    bin_dir = fake_bin(sinfo=f"cat <<'EOF'\n{SINFO}EOF", sbatch="echo 99")
    assert launch(*args, str(run_yaml)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (bin_dir / "sbatch.log").exists() and not Path("job.sbatch").exists()


def test_time_limit_is_checked_against_the_measured_step_time(run_yaml, fake_bin, capsys, tmp_path):
    fake_bin(sinfo=f"cat <<'EOF'\n{SINFO}EOF", sbatch="echo 99")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step_time_s": 40.0}) + "\n")
    assert launch("--cpu", "--time", "01:00:00", str(run_yaml)) == 2
    assert f"(measured in {tmp_path / 'run'}) = 67 min" in capsys.readouterr().err


def test_submit_prints_the_job_id(run_yaml, fake_bin, capsys, tmp_path):
    bin_dir = fake_bin(sinfo=f"cat <<'EOF'\n{SINFO}EOF", sbatch="echo '4321;clusterA'")
    options = tmp_path / "site.yaml"
    options.write_text(yaml.safe_dump({"partition": "gpu", "account": "proj", "qos": "high", "time": "10:00:00",
                                       "gpus_per_node": 8, "cpus_per_task": 16, "mem": "0", "nodes": 2}))
    assert launch("--slurm-config", str(options), "--qos", "low", str(run_yaml)) == 0
    out = capsys.readouterr()
    assert out.out == "4321\n" and "clusterlm jobs 4321" in out.err
    assert (bin_dir / "sbatch.log").read_text() == "--parsable job.sbatch\n"
    script = Path("job.sbatch").read_text()
    for line in ("--partition=gpu", "--account=proj", "--qos=low", "--time=10:00:00", "--nodes=2",
                 "--gpus-per-node=8", "--cpus-per-task=16", "--mem=0", "--requeue", "--signal=B:USR1@120"):
        assert f"#SBATCH {line}\n" in script  # the file gives defaults, the flag (--qos) wins


def test_slurm_config_with_unknown_key_is_one_line(run_yaml, tmp_path, capsys):
    options = tmp_path / "site.yaml"
    options.write_text("partiton: gpu\n")
    assert main(["launch", "--slurm", "--slurm-config", str(options), str(run_yaml)]) == 2
    assert "unknown config key 'partiton'; did you mean 'partition'?" in capsys.readouterr().err


def test_jobs_shows_one_job_with_its_log(fake_bin, capsys, tmp_path):
    log = tmp_path / "llm-1234.out"
    log.write_text("resuming from runs/a/checkpoints/step-0000006 (step 6)\nstep 60: val loss 3.41\n")
    record = SCONTROL_JOB.replace("/home/alice/my jobs/llm-1234.out", str(log))
    fake_bin(scontrol=f"cat <<'EOF'\n{record}\nEOF")
    assert main(["jobs", "1234", "--lines", "1"]) == 0
    out = capsys.readouterr().out
    for text in ("state        RUNNING, requeued 1×", "elapsed      00:12:07 of 01:00:00",
                 "nodes        2  gpu[07-08]", f"log          {log}", "step 60: val loss 3.41"):
        assert text in out
    assert "resuming from" not in out  # only the last line was asked for


def test_jobs_lists_and_reports_missing_commands(fake_bin, capsys):
    fake_bin(only=True)
    assert main(["jobs"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 'squeue' not found on PATH") and err.count("\n") == 1
    fake_bin(squeue="echo '1240|eval|PENDING|0:00|30:00|1|(Priority)'")
    assert main(["jobs"]) == 0
    assert "1240         eval                 PENDING" in capsys.readouterr().out
