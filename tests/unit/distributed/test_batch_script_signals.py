"""The generated batch script's Slurm branch, run by bash with stand-in `srun`/`scancel`/`scontrol`.

What Slurm does is played by the fakes: `srun` runs the step (a stand-in trainer that, like
`clusterlm train`, checkpoints and exits 130 on SIGTERM), `scancel --signal=TERM JOB` signals
the step's processes, `scontrol requeue JOB` is recorded. The real thing runs in tests/slurm/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from clusterlm.distributed.launch import LaunchSpec, sbatch_script

# A stand-in for `clusterlm train`: trains for ~2 s, or on SIGTERM "checkpoints" and exits 130.
TRAINER = """\
#!/bin/bash
trap 'echo checkpoint >> "$FAKE_DIR/trainer.log"; sleep 0.3; exit 130' TERM
echo started >> "$FAKE_DIR/trainer.log"
for i in $(seq 20); do sleep 0.1; done
echo finished >> "$FAKE_DIR/trainer.log"
"""


def run_script(tmp_path: Path, fake_bin, spec: LaunchSpec, send: list[signal.Signals]) -> tuple[int, Path]:
    bin_dir = fake_bin(
        srun='echo $$ > "$FAKE_DIR/step.pid"; exec "$@"',
        scancel='[ "$1" = --signal=TERM ] && kill -TERM "$(cat "$FAKE_DIR/step.pid")"',
        scontrol="true",
    )
    trainer = tmp_path / "trainer"
    trainer.write_text(TRAINER)
    trainer.chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(sbatch_script(spec))
    env = {**os.environ, "SLURM_JOB_ID": "77", "FAKE_DIR": str(bin_dir), "PYTHON": str(trainer)}
    proc = subprocess.Popen(["bash", str(script)], env=env, cwd=tmp_path)
    try:
        log = bin_dir / "trainer.log"
        deadline = time.monotonic() + 30
        while not (log.exists() and "started" in log.read_text()):
            assert time.monotonic() < deadline and proc.poll() is None, "the step never started"
            time.sleep(0.05)
        for sig in send:  # what Slurm sends the batch shell: USR1 before the time limit, TERM on preemption
            proc.send_signal(sig)
            time.sleep(0.1)
        return proc.wait(timeout=30), bin_dir
    finally:
        if proc.poll() is None:
            proc.kill()


def calls(bin_dir: Path, name: str) -> list[str]:
    path = bin_dir / f"{name}.log"
    return path.read_text().splitlines() if path.exists() else []


SPEC = dict(launcher="srun", gpus_per_node=2, use_gpus=False, time_limit="00:10:00")


def test_warning_signal_checkpoints_and_requeues(tmp_path, fake_bin):
    status, bin_dir = run_script(tmp_path, fake_bin, LaunchSpec("run.yaml", **SPEC), [signal.SIGUSR1])
    assert status == 130
    assert calls(bin_dir, "trainer") == ["started", "checkpoint"]  # stopped by SIGTERM, not killed
    assert calls(bin_dir, "scancel") == ["--signal=TERM 77"]  # the step's processes, not srun itself
    assert calls(bin_dir, "scontrol") == ["requeue 77"]


def test_second_signal_during_the_checkpoint_still_requeues_once(tmp_path, fake_bin):
    status, bin_dir = run_script(tmp_path, fake_bin, LaunchSpec("run.yaml", **SPEC),
                                 [signal.SIGUSR1, signal.SIGUSR1])
    assert status == 130 and calls(bin_dir, "scontrol") == ["requeue 77"]
    assert calls(bin_dir, "trainer")[:2] == ["started", "checkpoint"] and "finished" not in calls(bin_dir, "trainer")


def test_sigterm_stops_without_requeue(tmp_path, fake_bin):
    """Preemption or scancel: the job checkpoints; Slurm itself requeues a preempted job."""
    status, bin_dir = run_script(tmp_path, fake_bin, LaunchSpec("run.yaml", **SPEC), [signal.SIGTERM])
    assert status == 130 and calls(bin_dir, "trainer") == ["started", "checkpoint"]
    assert calls(bin_dir, "scontrol") == []


@pytest.mark.parametrize("requeue", [True, False])
def test_no_signal_finishes_and_no_requeue_flag_never_requeues(tmp_path, fake_bin, requeue):
    spec = LaunchSpec("run.yaml", **SPEC, requeue=requeue)
    send = [] if requeue else [signal.SIGUSR1]
    status, bin_dir = run_script(tmp_path, fake_bin, spec, send)
    assert calls(bin_dir, "scontrol") == []
    if requeue:
        assert status == 0 and calls(bin_dir, "trainer") == ["started", "finished"]
    else:
        assert status == 130 and calls(bin_dir, "trainer") == ["started", "checkpoint"]
