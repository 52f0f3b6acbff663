"""The planner recommends only what `clusterlm train` runs, and plan → emit → launch check one layout."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml

from clusterlm.cli.main import main
from clusterlm.cluster import planner
from clusterlm.cluster.estimator import Execution, Workload, estimate
from clusterlm.cluster.executable import execution_from_plan, not_executable, trainer_layout
from clusterlm.config.model import ModelConfig
from clusterlm.config.run import load_run_config, parallel_plan

from planhelp import toy_cluster


def llama(n_layer: int = 8, tie: bool = False) -> ModelConfig:
    return ModelConfig(style="llama", n_layer=n_layer, n_head=8, n_kv_head=4, d_model=256, vocab_size=1024,
                       max_seq_len=256, tie_embeddings=tie)


@pytest.mark.parametrize("execution", [
    Execution(tp=2, dp=4, zero=0, sequence_parallel=True, micro_batch=2),
    Execution(tp=2, dp=4, zero=3, dp_shard=2, sequence_parallel=True),
    Execution(pp=2, dp=4, zero=2, micro_batch=1),
    Execution(pp=2, dp=2, tp=2, zero=3, interleave=2, sequence_parallel=True, recompute="full"),
    Execution(pp=4, dp=2, micro_batch=4, pipeline_split="balanced"),
])
def test_execution_and_trainer_plan_round_trip(execution):
    workload = Workload(llama(), seq_len=128, global_batch=32)
    layout = trainer_layout(workload, replace(execution, precision="bf16"))
    plan = layout.plan
    assert plan.world_size == execution.num_gpus and plan.global_batch() == 32
    back = execution_from_plan(plan, "bf16")
    for name in ("tp", "pp", "dp", "micro_batch", "interleave", "zero", "dp_shard", "recompute"):
        assert getattr(back, name) == getattr(execution, name), name
    # The estimator sees the same split the trainer runs.
    assert estimate(workload, toy_cluster(2, 4), back).split.chunks == plan.layers_per_stage(8)


def test_schedule_follows_the_micro_batches():
    workload = Workload(llama(), seq_len=128, global_batch=8)
    assert trainer_layout(workload, Execution(pp=4, dp=2, micro_batch=1)).plan.pp_schedule == "1f1b"  # m=4
    assert trainer_layout(workload, Execution(pp=4, dp=2, micro_batch=2)).plan.pp_schedule == "gpipe"  # m=2 < p
    assert trainer_layout(workload, Execution(pp=2, dp=4, interleave=2)).plan.pp_schedule == "interleaved_1f1b"


@pytest.mark.parametrize("change,reason", [
    (dict(cp=2), "context parallelism"),
    (dict(fp8=True), "FP8"),
    (dict(zero=1), "ZeRO-1"),
    (dict(recompute="selective"), "selective recompute"),
    (dict(recompute="full", recompute_fraction=0.5), "recomputing 0.5 of the layers"),
    (dict(tp=2, sequence_parallel=False), "without --sequence-parallel"),
    (dict(tp=8, sequence_parallel=True), "does not divide model.n_kv_head"),  # the planner allows t % kv == 0
    (dict(pp=2, precision="fp16"), "fp16"),
])
def test_what_the_trainer_cannot_run_is_named(change, reason):
    base = Execution(tp=1, dp=2, zero=3, precision="bf16")
    why = not_executable(Workload(llama(), seq_len=128, global_batch=16), replace(base, **change))
    assert why is not None and reason in why


def test_tied_embeddings_rule_out_pipeline_stages():
    workload = Workload(llama(tie=True), seq_len=128, global_batch=16)
    assert "tie_embeddings=false" in not_executable(workload, Execution(pp=2, dp=2))
    result = planner.search(workload, toy_cluster(1, 4), Execution(precision="bf16"), top=100)
    assert result.ranked and all(e.execution.pp == 1 for e in result.ranked)
    assert any(e.execution.pp > 1 and "tie_embeddings" in why for e, why in result.not_executable)


def test_search_ranks_only_executable_layouts():
    workload = Workload(llama(), seq_len=128, global_batch=16)
    result = planner.search(workload, toy_cluster(2, 4), Execution(precision="bf16"), top=1000)
    assert result.fitting == len(result.ranked) > 0
    assert all(not_executable(workload, e.execution) is None for e in result.ranked)
    assert {e.execution.zero for e, _ in result.not_executable} >= {1}  # ZeRO-1 is priced, not recommended
    assert all(why for _, why in result.not_executable)


def test_405b_search_emit_passes_launch_dry_run(tmp_path, capsys):
    """The README example: the emitted config is what `launch --dry-run` (the validator and the memory
    check against the plan's cluster) accepts on 2048 nodes × 8, and its estimate fits an H100."""
    out = tmp_path / "405b"
    assert main(["plan", "--model", "llama3-405B", "--cluster", "dgx-h100", "--gpus", "16384", "--batch", "2048",
                 "--seq", "8192", "--search", "--emit", str(out)]) == 0
    capsys.readouterr()
    plan = json.loads((out / "plan.json").read_text())
    assert plan["fits"] and plan["executable"] and plan["memory_gib"]["total"] < 80
    cfg = load_run_config(out / "config.yaml")
    layout = parallel_plan(cfg, 16384)  # the check `clusterlm train` runs before anything else
    assert layout.world_size == 16384 and layout.global_batch() == 2048 and not cfg.model.tie_embeddings
    assert main(["launch", "--dry-run", "--nodes", "2048", "--gpus-per-node", "8", str(out / "config.yaml")]) == 0
    captured = capsys.readouterr()
    assert "--nnodes=2048" in captured.out and "fits" in captured.err and "dgx-h100" in captured.err
    # Half the nodes: the degrees no longer multiply to the world size, and nothing is printed to run.
    assert main(["launch", "--dry-run", "--nodes", "1024", "--gpus-per-node", "8", str(out / "config.yaml")]) == 2
    captured = capsys.readouterr()
    assert "the world size is 8192" in captured.err and captured.out == ""


def test_emit_refuses_what_train_would_refuse(tmp_path, capsys):
    base = ["plan", "--model", "gpt3-175B", "--cluster", "dgx-a100-superpod", "--gpus", "1024", "--batch", "1536",
            "--seq", "2048", "--sequence-parallel"]
    # A published Megatron layout: priced (exit 0), but ZeRO-1 and selective recompute are not clusterlm's.
    assert main([*base, "--parallel", "t=8,p=8", "--recompute", "selective", "--zero", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["executable"] is False and "ZeRO-1" in out["not_executable_reason"]
    assert main([*base, "--parallel", "t=8,p=8", "--recompute", "full", "--zero", "3",
                 "--emit", str(tmp_path / "a")]) == 2
    assert "tie_embeddings=false" in capsys.readouterr().err and not (tmp_path / "a").exists()
    # Untied, the same layout is emitted and its pipeline keys load.
    assert main([*base, "--parallel", "t=8,p=8", "--recompute", "full", "--zero", "3", "model.tie_embeddings=false",
                 "--emit", str(tmp_path / "b")]) == 0
    cfg = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert cfg["parallel"]["pp"] == 8 and cfg["parallel"]["pp_schedule"] == "1f1b"
    assert cfg["train"]["activation_checkpointing"] is True


def test_launch_checks_memory_against_a_cluster(tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"model": {"preset": "llama3-8B"}, "parallel": {"dp_shard": 1, "dp_replicate": 8},
                                   "train": {"seq_len": 8192, "micro_batch": 4, "precision": "bf16"}}))
    argv = ["launch", "--dry-run", "--gpus-per-node", "8", str(run)]
    assert main([*argv, "--cluster", "dgx-h100"]) == 2  # DDP: 16 bytes of state per parameter on every GPU
    assert "does not fit" in capsys.readouterr().err
    assert main([*argv, "parallel.dp_shard=-1", "parallel.dp_replicate=1", "train.activation_checkpointing=true",
                 "--cluster", "dgx-h100"]) == 0
    assert "fits" in capsys.readouterr().err
    assert main([*argv, "train.precision=fp16", "parallel.dp_shard=-1", "parallel.dp_replicate=1"]) == 2
    assert "fp16" in capsys.readouterr().err
