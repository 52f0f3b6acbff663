"""Run N local worker processes as a gloo job on 127.0.0.1, with a hard timeout.

Each worker is `python WORKER_SCRIPT ARGS...` with torchrun's environment variables set
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1, MASTER_PORT=<free port>), so the code
under test joins the job exactly as under torchrun. If any worker fails, or the job outlives
`timeout_s`, every worker is killed and the test fails with the workers' output — a
multi-process test can fail but never hang.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def run_job(nprocs: int, cmd: list[str], *, timeout_s: float = 120.0,
            extra_env: dict[str, str] | None = None) -> list[str]:
    """Start `nprocs` ranks of `cmd`; return each rank's combined stdout/stderr."""
    port = free_port()
    procs = []
    for rank in range(nprocs):
        env = worker_env({
            "RANK": str(rank), "WORLD_SIZE": str(nprocs), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(nprocs), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            **(extra_env or {}),
        })
        procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return wait_all(procs, timeout_s)


def wait_all(procs: list[subprocess.Popen], timeout_s: float) -> list[str]:
    """Collect every process's output; kill them all on the first failure or at the deadline."""
    deadline = time.monotonic() + timeout_s
    outputs: list[str] = [""] * len(procs)
    try:
        for i, p in enumerate(procs):
            remaining = max(0.1, deadline - time.monotonic())
            outputs[i], _ = p.communicate(timeout=remaining)
            if p.returncode != 0:
                raise AssertionError(f"process {i} exited with {p.returncode}:\n{outputs[i][-4000:]}")
    except subprocess.TimeoutExpired:
        raise AssertionError(f"processes did not finish within {timeout_s:.0f} s") from None
    finally:
        for p in procs:
            kill_tree(p)
    return outputs


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill a process and all its descendants (torchrun starts workers in their own sessions)."""
    import psutil

    if proc.poll() is not None:
        return
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    proc.kill()
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def run_command(cmd: list[str], *, timeout_s: float, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run a launcher (torchrun) to completion; on timeout kill it with every worker it started."""
    proc = subprocess.Popen(cmd, env=worker_env(), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise AssertionError(f"{cmd[0]} did not finish within {timeout_s:.0f} s") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def parse_results(text: str) -> list[dict]:
    """Every `RESULT {json}` in `text`, in order. Ranks sharing one stdout (torchrun) can interleave
    their writes, so a RESULT need not start a line: decode from each marker, not line by line."""
    decoder, results, start = json.JSONDecoder(), [], text.find("RESULT ")
    while start >= 0:
        obj, end = decoder.raw_decode(text, start + len("RESULT "))
        results.append(obj)
        start = text.find("RESULT ", end)
    return results


def run_workers(nprocs: int, args: list[str], *, timeout_s: float = 120.0, script: Path = WORKER,
                extra_env: dict[str, str] | None = None) -> list[dict]:
    """Start `nprocs` ranks of `script args`; return each rank's JSON result (its last RESULT line)."""
    outputs = run_job(nprocs, [sys.executable, str(script), *args], timeout_s=timeout_s, extra_env=extra_env)
    results = []
    for i, out in enumerate(outputs):
        found = parse_results(out)
        if not found:
            raise AssertionError(f"rank {i} printed no RESULT line:\n{out[-4000:]}")
        results.append(found[-1])
    return results


def train_args(data_dir: Path, out_dir: Path, *overrides: str) -> list[str]:
    """`clusterlm train` overrides for a 2-layer width-32 model on 16-token windows, global batch 8."""
    return [
        "model.preset=tiny", "model.d_model=32", "model.n_head=4", "model.max_seq_len=32",
        f"data.dir={data_dir}", f"train.out_dir={out_dir}", "train.seq_len=16", "train.micro_batch=4",
        "train.batch_size=8", "train.max_steps=8", "train.warmup_steps=2", "train.lr=3e-3",
        "train.eval_every=100", "train.eval_batches=2", "train.ckpt_every=4", "train.log_every=1",
        "train.precision=fp32", "train.tensorboard=false", "train.plots=false", "parallel.timeout_s=60",
        *overrides,
    ]
