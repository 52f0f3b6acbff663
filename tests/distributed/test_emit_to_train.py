"""What `clusterlm plan --emit` writes trains: the Slurm script on a two-node loopback "cluster", and
the Llama-3-405B plan scaled down to 8 CPU ranks.

Both start from the planner (`plan … --emit DIR`) and end in `clusterlm train` run by the emitted
launch path, so a key the planner writes that the trainer refuses, or a layout the validator lets
through that the trainer cannot run, fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from harness import free_port, run_job, wait_all, worker_env

from clusterlm.cli.main import main

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
DEGREES = ("pp", "dp_replicate", "dp_shard", "tp")


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def summary(run_dir: Path) -> dict:
    return [r for r in records(run_dir) if r["kind"] == "summary"][-1]


def tiny_llama(vocab: int = 300) -> dict:
    """An untied Llama-style model (pipeline stages cannot share a tied embedding and head)."""
    return {"style": "llama", "n_layer": 4, "n_head": 4, "n_kv_head": 2, "d_model": 64, "d_ff": 128,
            "max_seq_len": 32, "vocab_size": vocab, "tie_embeddings": False}


def quick_train(out_dir: Path, **extra) -> dict:
    return {"out_dir": str(out_dir), "seq_len": 16, "max_steps": 3, "warmup_steps": 1, "eval_every": 100,
            "eval_batches": 1, "ckpt_every": 100, "log_every": 1, "tensorboard": False, "plots": False, **extra}


def test_emitted_sbatch_trains_a_pipeline_layout_on_two_loopback_nodes(dist_data, tmp_path, capsys):
    """plan --emit (2 nodes × 2 CPU ranks, p=2 × d=2) → job.sbatch → outside Slurm, `bash job.sbatch`
    starts one torchrun agent per "node"; they meet at the first node's c10d store and train."""
    spec = tmp_path / "two-nodes.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "two loopback nodes", "nodes": 2, "network": {"type": "eth-25", "nics_per_node": 1},
        "node": {"accelerators_per_node": 2, "intra_node": {"bandwidth_gb_s": 1.0},
                 "accelerator": {"name": "cpu-test", "kind": "cpu", "peak_tflops": {"fp32": 0.05},
                                 "memory_gib": 4, "memory_bandwidth_gb_s": 10}}}))
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"data": {"dir": str(dist_data), "vocab_size": 300}, "model": tiny_llama(),
                                   "parallel": {"timeout_s": 60},
                                   "train": quick_train(tmp_path / "run", micro_batch=2, precision="fp32")}))
    emit = tmp_path / "plan"
    assert main(["plan", "--model", str(run), "--cluster", str(spec), "--parallel", "t=1,p=2,d=2", "--zero", "3",
                 "--batch", "8", "--emit", str(emit)]) == 0
    capsys.readouterr()
    cfg = yaml.safe_load((emit / "config.yaml").read_text())
    assert {k: cfg["parallel"][k] for k in DEGREES} == {"pp": 2, "dp_replicate": 1, "dp_shard": 2, "tp": 1}
    script = (emit / "job.sbatch").read_text()
    assert "#SBATCH --nodes=2" in script and 'srun --nodes=2 --ntasks-per-node=1 "$TORCHRUN"' in script
    assert 'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
    assert "--rdzv-backend=c10d" in script and "--rdzv-endpoint=$HEAD_NODE:$PORT" in script

    env = worker_env({"TORCHRUN": TORCHRUN, "RDZV_PORT": str(free_port())})
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    job = subprocess.Popen(["bash", "job.sbatch"], env=env, cwd=emit, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    wait_all([job], timeout_s=240)
    done = summary(tmp_path / "run")
    assert done["world_size"] == 4 and done["parallel"] == "pp=2 dp_shard=2 (1f1b)"
    assert done["stop_reason"] == "max_steps" and done["val_loss"] is not None
    assert (tmp_path / "run" / "checkpoints" / "step-0000003" / "dcp" / ".metadata").is_file()


def scaled_down(config: dict, data: Path, out_dir: Path, ranks: int = 8) -> dict:
    """The emitted config with a tiny model and every degree the plan uses set to 2 (data parallel
    fills the rest of `ranks`), the same micro-batch, micro-batches per step and precision."""
    par, train = config["parallel"], config["train"]
    dp = par["dp_replicate"] * par["dp_shard"]
    per_step = train["batch_size"] // (train["micro_batch"] * dp)  # the plan's m
    degrees = {k: 2 if par[k] > 1 else 1 for k in DEGREES}
    rest = ranks // (degrees["pp"] * degrees["dp_replicate"] * degrees["dp_shard"] * degrees["tp"])
    degrees["dp_shard"] *= rest
    new_dp = degrees["dp_replicate"] * degrees["dp_shard"]
    return {**config, "data": {"dir": str(data)}, "model": tiny_llama(),
            "parallel": {**par, **degrees, "timeout_s": 60},
            "train": {**train, **quick_train(out_dir), "batch_size": train["micro_batch"] * per_step * new_dp}}


def test_405b_plan_scaled_down_trains_three_steps_on_eight_ranks(dist_data, tmp_path, capsys):
    """The README's 405B `--search --emit` config, narrower and shallower, with the emitted degrees
    pattern scaled to 8 ranks, through `clusterlm train` under torchrun's environment."""
    emit = tmp_path / "405b"
    assert main(["plan", "--model", "llama3-405B", "--cluster", "dgx-h100", "--gpus", "16384", "--batch", "2048",
                 "--seq", "8192", "--search", "--emit", str(emit)]) == 0
    capsys.readouterr()
    emitted = yaml.safe_load((emit / "config.yaml").read_text())
    config = scaled_down(emitted, dist_data, tmp_path / "run")
    path = tmp_path / "scaled.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run_job(8, [sys.executable, "-m", "clusterlm", "train", str(path), "--quiet"], timeout_s=300)
    done = summary(tmp_path / "run")
    expected = " ".join(f"{k}={config['parallel'][k]}" for k in DEGREES if config["parallel"][k] > 1)
    assert done["world_size"] == 8 and done["parallel"].startswith(expected)
    assert done["stop_reason"] == "max_steps" and done["precision"] == emitted["train"]["precision"]
    losses = [r["loss"] for r in records(tmp_path / "run") if r["kind"] == "train"]
    assert len(losses) == 3 and all(0 < loss < 10 for loss in losses)
