"""`clusterlm train` across processes: resharding resume, elastic restart, two-node loopback, export.

Every run trains the same 2-layer model on the same dataset with global batch 8 (one process
with micro_batch 8, two with 4 each: the loader gives both exactly the same windows) for 8
steps, logging the loss every step. A run that is stopped at step 4 and resumed elsewhere must
reproduce the uninterrupted single-process loss curve to float tolerance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from harness import parse_results, run_command, run_workers, train_args, wait_all, worker_env

from clusterlm.distributed.launch import LaunchSpec, multi_node_command, single_node_command

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
TOLERANCE = dict(atol=2e-5, rtol=1e-5)  # fp32; observed differences ≲ 1e-6


def train_job(nprocs: int, data: Path, out: Path, *overrides: str, **faults: int) -> list[dict]:
    micro = 8 // nprocs
    spec = {"overrides": train_args(data, out, f"train.micro_batch={micro}", *overrides), **faults}
    return run_workers(nprocs, ["train", json.dumps(spec)], timeout_s=240)


def losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def summary(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "summary"][-1]


def assert_same_curve(got: dict[int, float], want: dict[int, float]) -> None:
    assert sorted(got) == sorted(want) == list(range(1, 9))
    torch.testing.assert_close(torch.tensor([got[s] for s in sorted(got)]),
                               torch.tensor([want[s] for s in sorted(want)]), **TOLERANCE)


@pytest.fixture(scope="module")
def reference(dist_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    """The uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train_job(1, dist_data, out)
    return losses(out)


def test_checkpoint_from_two_processes_resumes_in_one(dist_data, tmp_path, reference):
    out = tmp_path / "run"
    first = train_job(2, dist_data, out, "parallel.async_checkpoint=true", stop_at=4)
    assert [r["stop_reason"] for r in first] == ["interrupted"] * 2
    ckpt = out / "checkpoints" / "step-0000004"
    assert (ckpt / "dcp" / ".metadata").is_file() and not (ckpt / "model.safetensors").exists()
    assert json.loads((ckpt / "meta.json").read_text())["weights"] == "dcp"
    # Communication is measured and logged every step and in the run summary.
    record = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][0]
    assert record["comm_bytes_per_step"] > 0 and 0 < record["comm_fraction"] < 1
    assert summary(out)["parallel"] == "dp_shard=2" and summary(out)["comm_bytes_reduce_scatter_per_step"] > 0

    second = train_job(1, dist_data, out)
    assert second[0]["step"] == 8 and second[0]["stop_reason"] == "max_steps"
    assert_same_curve(losses(out), reference)

    # `clusterlm export` consolidates the (final, single-process) checkpoint; the DCP one too.
    from clusterlm.cli.main import main
    from clusterlm.checkpoint.load import load_model as load_model_dir

    exported = tmp_path / "step4.safetensors"
    assert main(["export", str(ckpt), "--out", str(exported)]) == 0
    single = load_model_dir(exported).model.state_dict()
    direct = load_model_dir(ckpt).model.state_dict()
    assert single.keys() == direct.keys() and all(torch.equal(single[k], direct[k]) for k in single)


def test_checkpoint_from_one_process_resumes_in_two(dist_data, tmp_path, reference):
    out = tmp_path / "run"
    train_job(1, dist_data, out, stop_at=4)
    assert (out / "checkpoints" / "step-0000004" / "model.safetensors").is_file()
    result = train_job(2, dist_data, out)
    assert result[0]["step"] == 8
    assert_same_curve(losses(out), reference)
    assert (out / "checkpoints" / "step-0000008" / "dcp" / ".metadata").is_file()


def test_checkpoint_from_two_processes_resumes_on_four_with_tensor_parallel(dist_data, tmp_path, reference):
    out = tmp_path / "run"
    train_job(2, dist_data, out, stop_at=4)
    result = run_workers(4, ["train", json.dumps({"overrides": train_args(
        dist_data, out, "train.micro_batch=4", "parallel.tp=2")})], timeout_s=300)
    assert result[0]["summary"]["parallel"] == "dp_shard=2 tp=2"
    assert_same_curve(losses(out), reference)


def test_elastic_restart_after_a_rank_is_killed(dist_data, tmp_path, reference):
    """torchrun --max-restarts=1: rank 1 is SIGKILLed at step 6; all workers restart from the
    step-4 checkpoint and finish with the uninterrupted run's losses."""
    from harness import WORKER

    out = tmp_path / "run"
    spec = {"overrides": train_args(dist_data, out, "train.micro_batch=4"), "crash_at": 6, "crash_rank": 1}
    launch = LaunchSpec("-", gpus_per_node=2, max_restarts=1, entry=(str(WORKER), "train", json.dumps(spec)))
    cmd = [TORCHRUN, *single_node_command(launch)[1:-1]]  # drop the config argument our worker ignores
    proc = run_command(cmd, timeout_s=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = parse_results(proc.stdout)
    log = proc.stdout[-2000:] + proc.stderr[-3000:]
    assert sorted(r["rank"] for r in results) == [0, 1] and all(r["restarts"] == 1 for r in results), log
    assert "exitcode: -9" in proc.stderr, log  # the kill really happened
    assert_same_curve(losses(out), reference)


def test_two_node_loopback_launch_trains(dist_data, tmp_path):
    """The commands `clusterlm launch --nodes 2` prints, run as two torchrun agents on 127.0.0.1."""
    from harness import free_port

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"train": {"max_steps": 4}}))
    out = tmp_path / "run"
    spec = LaunchSpec(str(config), nodes=2, gpus_per_node=1, rdzv_port=free_port(), rdzv_id="loopback-test",
                      overrides=tuple(train_args(dist_data, out, "train.micro_batch=4", "train.max_steps=4",
                                                 "--quiet")))
    cmd = [TORCHRUN, *multi_node_command(spec)[1:]]
    assert "--nnodes=2" in cmd and "--rdzv-backend=c10d" in cmd
    agents = [subprocess.Popen(cmd, env=worker_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = wait_all(agents, timeout_s=240)
    text = "\n".join(outputs)
    assert "parallel     dp_shard=2 on 2 processes" in text  # rank 0's run summary
    assert summary(out)["world_size"] == 2 and summary(out)["stop_reason"] == "max_steps"
    assert (out / "checkpoints" / "step-0000004" / "dcp" / ".metadata").is_file()
