"""Against a real Slurm (scripts/local-slurm.sh): submit, train with 2 ranks, preempt, requeue, tear down.

Every job is submitted the way a user submits it — `clusterlm launch --slurm --submit` — and
trains the parity tests' 2-layer model (tests/distributed/harness.py: global batch 8) with two
`srun` tasks on the 2 CPUs (gloo, one task per rank, no torchrun). Its loss curve must match
one process's on the same global batch, to the distributed tests' tolerance.

Run with `make test-slurm` (2½ minutes on 2 busy shared cores with the apt install; docs/distributed.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from harness import train_args

from clusterlm.config.run import load_run_config
from clusterlm.distributed.slurm_client import job_info
from clusterlm.train.trainer import Trainer

pytestmark = pytest.mark.slurm

MAX_STEPS = 60  # ~0.1 s per step with 2 ranks: long enough to signal a running job
TOLERANCE = dict(atol=2e-5, rtol=1e-5)  # fp32, as tests/distributed/test_training.py
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}


def overrides(data: Path, out: Path, *extra: str) -> list[str]:
    return train_args(data, out, f"train.max_steps={MAX_STEPS}", "train.ckpt_every=20", *extra)


def losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def assert_same_curve(got: dict[int, float], want: dict[int, float]) -> None:
    assert sorted(got) == sorted(want) == list(range(1, MAX_STEPS + 1))
    torch.testing.assert_close(torch.tensor([got[s] for s in sorted(got)]),
                               torch.tensor([want[s] for s in sorted(want)]), **TOLERANCE)


def submit(workdir: Path, data: Path, out: Path, job_name: str, launcher: str = "srun") -> str:
    """`clusterlm launch --slurm --submit` for 2 ranks on the CPUs; the job id it prints."""
    # srun: two tasks of 1 CPU, one per rank; torchrun: one task of 2 CPUs whose agent starts 2 workers.
    cpus = "1" if launcher == "srun" else "2"
    cmd = [sys.executable, "-m", "clusterlm", "launch", "--slurm", "--submit", "--cpu", "--launcher", launcher,
           "--gpus-per-node", "2", "--cpus-per-task", cpus, "--time", "00:10:00", "--job-name", job_name,
           str(workdir / "run.yaml"), *overrides(data, out, "train.micro_batch=4")]
    (workdir / "run.yaml").write_text("{}\n")  # everything is in the overrides
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def wait_for(job_id: str, timeout_s: float = 180):
    deadline = time.monotonic() + timeout_s
    while True:
        job = job_info(job_id)
        if job.state in FINAL_STATES:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.state} after {timeout_s:.0f} s"
        time.sleep(0.5)


def log_of(job) -> str:
    return Path(job.stdout).read_text(errors="replace")


@pytest.fixture(scope="module")
def reference(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    """One process, the whole global batch (micro_batch 8), never interrupted."""
    out = tmp_path_factory.mktemp("reference") / "run"
    Trainer(load_run_config(None, overrides(tiny_data, out, "train.micro_batch=8")), progress=False).run()
    return losses(out)


def test_two_task_srun_job_trains_like_one_process(slurm_cluster, tiny_data, tmp_path, reference):
    """`srun clusterlm train`: each task finds its rank and rank 0's node in SLURM_* alone."""
    out = tmp_path / "run"
    job_id = submit(tmp_path, tiny_data, out, "parity", "srun")
    job = wait_for(job_id)
    assert job.state == "COMPLETED", log_of(job)[-3000:]
    assert "parallel     dp_shard=2 on 2 processes" in log_of(job)
    assert_same_curve(losses(out), reference)


def test_warning_signal_checkpoints_requeues_and_finishes(slurm_cluster, tiny_data, tmp_path, reference):
    """The default launcher, `srun torchrun …` (c10d at the first node), warned before its time limit."""
    out = tmp_path / "run"
    job_id = submit(tmp_path, tiny_data, out, "preempt", "torchrun")
    deadline = time.monotonic() + 120
    while len(losses(out) if (out / "metrics.jsonl").exists() else {}) < 2:  # training is under way
        assert time.monotonic() < deadline and job_info(job_id).state not in FINAL_STATES, "training never started"
        time.sleep(0.2)
    # What `#SBATCH --signal=B:USR1@120` does before the time limit: USR1 to the batch shell only.
    subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], check=True, timeout=30)
    job = wait_for(job_id)
    log = log_of(job)
    assert job.state == "COMPLETED" and job.restarts == 1, log[-3000:]
    assert "requeueing job" in log and "resuming from" in log
    stopped = int(log.split("resuming from ")[1].split("(step ")[1].split(")")[0])
    assert 0 < stopped < MAX_STEPS and stopped % 20 != 0, f"checkpointed at step {stopped}: not the signal's stop"
    assert_same_curve(losses(out), reference)  # the requeued job ends where an uninterrupted run ends
    shown = subprocess.run([sys.executable, "-m", "clusterlm", "jobs", job_id], capture_output=True, text=True,
                           timeout=60).stdout
    assert "state        COMPLETED, requeued 1×" in shown and "(stopped: max_steps at step 60)" in shown


def test_teardown_leaves_no_daemon(slurm_cluster):
    """Runs last: `down` stops every daemon it started (by pid) and nothing of the cluster remains."""
    pids = {name: int((slurm_cluster / f"{name}.pid").read_text()) for name in ("munged", "slurmctld", "slurmd")}
    assert all(psutil.pid_exists(pid) for pid in pids.values())
    script = Path(__file__).resolve().parents[2] / "scripts" / "local-slurm.sh"
    subprocess.run(["bash", str(script), "down"], check=True, timeout=120)
    assert not any(psutil.pid_exists(pid) for pid in pids.values())
    leftovers = []  # a job's slurmstepd, or a daemon of this cluster (a system munged may run too)
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        name = proc.info["name"]
        if name == "slurmstepd" or (name in ("munged", "slurmctld", "slurmd") and str(slurm_cluster) in cmdline):
            leftovers.append(f"{proc.pid} {cmdline}")
    assert leftovers == []
    status = subprocess.run(["bash", str(script), "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 3 and "slurmctld  stopped" in status.stdout
    subprocess.run(["bash", str(script), "down"], check=True, timeout=60)  # idempotent
