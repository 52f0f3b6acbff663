"""torchrun / sbatch generation (pure functions) and `clusterlm launch`."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from clusterlm.cli.main import main
from clusterlm.distributed.launch import (
    LaunchSpec,
    sbatch_script,
    shell_join,
    single_node_command,
    torchrun_commands,
)
from clusterlm.errors import UsageError


def test_single_node_is_standalone():
    cmd = single_node_command(LaunchSpec("run.yaml", gpus_per_node=8, overrides=("train.lr=1e-4",)))
    assert cmd == ["torchrun", "--standalone", "--nproc-per-node=8", "--max-restarts=0", "-m", "clusterlm", "train",
                   "run.yaml", "train.lr=1e-4"]


def test_multi_node_uses_c10d_rendezvous():
    spec = LaunchSpec("run.yaml", nodes=4, gpus_per_node=8, rdzv_host="node001", rdzv_port=29400, rdzv_id="job7",
                      max_restarts=3)
    cmds = torchrun_commands(spec)
    assert len(cmds) == 4 and all(c == cmds[0] for c in cmds)  # identical on every node
    assert cmds[0][:7] == ["torchrun", "--nnodes=4", "--nproc-per-node=8", "--rdzv-backend=c10d",
                           "--rdzv-endpoint=node001:29400", "--rdzv-id=job7", "--max-restarts=3"]
    assert spec.world_size == 32


def test_sbatch_script_contents():
    spec = LaunchSpec("configs/run a.yaml", nodes=2, gpus_per_node=4, time_limit="1-12:00:00", partition="gpu",
                      account="proj", job_name="llm", env={"NCCL_IB_HCA": "mlx5"})
    script = sbatch_script(spec)
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --time=1-12:00:00", "#SBATCH --partition=gpu", "#SBATCH --account=proj",
                 "#SBATCH --job-name=llm", "export NCCL_IB_HCA=mlx5", "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1"):
        assert line in script
    assert 'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
    assert "srun --nodes=2 --ntasks-per-node=1 $TORCHRUN --nnodes=2 --nproc-per-node=4" in script
    assert "--rdzv-endpoint=$HEAD_NODE:$PORT" in script and "'configs/run a.yaml'" in script
    assert "#SBATCH --gpus" not in sbatch_script(LaunchSpec("r.yaml", nodes=2, use_gpus=False))
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # valid shell


def test_shell_join_keeps_variables_and_quotes_the_rest():
    assert shell_join(["echo", "$HOME", "--x=$Y:$Z", "a b", "it's"]) == "echo $HOME --x=$Y:$Z 'a b' 'it'\"'\"'s'"
    assert shlex.split(shell_join(["a b", "c"])) == ["a b", "c"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(nodes=0), "must be ≥ 1"), (dict(gpus_per_node=0), "must be ≥ 1"), (dict(rdzv_port=70000), "port"),
    (dict(time_limit="2 days"), "HH:MM:SS"), (dict(max_restarts=-1), "max-restarts"),
])
def test_invalid_launch_specs(kwargs, match):
    with pytest.raises(UsageError, match=match):
        LaunchSpec("run.yaml", **kwargs)


def _run_config(tmp_path: Path, **parallel) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": {"preset": "tiny"}, "parallel": parallel,
                                    "train": {"max_steps": 10, "warmup_steps": 1}}))
    return path


def test_cli_prints_commands(tmp_path, capsys):
    cfg = _run_config(tmp_path)
    assert main(["launch", "--nodes", "2", "--gpus-per-node", "1", str(cfg), "train.max_steps=3"]) == 0
    out = capsys.readouterr().out
    assert "--nnodes=2" in out and "--rdzv-backend=c10d" in out and "train.max_steps=3" in out
    assert main(["launch", str(cfg)]) == 0
    assert "--standalone" in capsys.readouterr().out


def test_cli_writes_sbatch(tmp_path, capsys):
    cfg = _run_config(tmp_path)
    out = tmp_path / "job.sbatch"
    assert main(["launch", "--nodes", "2", "--gpus-per-node", "4", "--slurm", "--out", str(out), str(cfg)]) == 0
    assert out.read_text().startswith("#!/bin/bash") and os.access(out, os.X_OK)
    assert main(["launch", "--nodes", "2", "--slurm", "--out", str(out), str(cfg)]) == 2  # no clobbering
    assert "exists" in capsys.readouterr().err


def test_cli_checks_config_and_degrees(tmp_path, capsys):
    assert main(["launch", "--nodes", "2", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    cfg = _run_config(tmp_path, dp_shard=4, tp=2)
    assert main(["launch", "--nodes", "2", "--gpus-per-node", "2", str(cfg)]) == 2
    assert "multiply to 8" in capsys.readouterr().err


def test_loopback_sbatch_script_runs_two_node_agents(tmp_path):
    """Outside Slurm the script starts both 'nodes' on 127.0.0.1 and they rendezvous (c10d)."""
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent("""
        import datetime, sys, torch, torch.distributed as dist
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
        t = torch.ones(1) * (dist.get_rank() + 1); dist.all_reduce(t)
        open(sys.argv[1] + f".{dist.get_rank()}", "w").write(f"{dist.get_world_size()} {t.item()}")
        dist.destroy_process_group()
    """))
    from clusterlm.cluster.probe import free_port

    spec = LaunchSpec(str(tmp_path / "out"), nodes=2, gpus_per_node=1, rdzv_port=free_port(), entry=(str(worker),))
    script = tmp_path / "job.sbatch"
    script.write_text(sbatch_script(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["TORCHRUN"] = str(Path(sys.executable).with_name("torchrun"))
    subprocess.run(["bash", str(script)], env=env, check=True, timeout=180, cwd=tmp_path)
    results = sorted((tmp_path / f"out.{r}").read_text() for r in range(2))
    assert results == ["2 3.0", "2 3.0"]
