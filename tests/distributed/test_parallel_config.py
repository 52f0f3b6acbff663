"""Parallel degrees, backend choice, torchrun environment, state splitting and the safe DCP index reader.

Unit tests: no process group is ever created here.
"""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from clusterlm.checkpoint.safety import MetadataUnpickler as _MetadataUnpickler
from clusterlm.checkpoint.state import merge_tensors, split_tensors
from clusterlm.config.model import ModelConfig
from clusterlm.config.parallel import ParallelConfig, ParallelPlan
from clusterlm.config.run import RunConfig
from clusterlm.distributed.comm_stats import ALL_GATHER, ALL_REDUCE, CommRecorder, wire_factor
from clusterlm.errors import CheckpointError, DistributedError
from clusterlm.runtime.process import LaunchEnv, join, launch_env, select_backend


def dims(world: int, **degrees: int) -> ParallelPlan:
    return ParallelPlan.resolve(ParallelConfig(**degrees), world)


def test_dp_shard_fills_the_rest_of_the_world():
    d = dims(8, tp=2)
    assert (d.dp_replicate, d.dp_shard, d.tp, d.dp) == (1, 4, 2, 4)
    assert d.fsdp and not d.ddp and d.sharded
    assert dims(4, dp_replicate=4, dp_shard=1).ddp


@pytest.mark.parametrize("world,degrees,match", [
    (4, dict(dp_shard=2, tp=1), "multiply to 2, but the world size is 4"),
    (6, dict(tp=4), "not divisible by dp_replicate × tp × pp = 4"),
    (4, dict(dp_shard=0), "dp_shard must be ≥ 1, or -1"),
    (2, dict(pp=2, dp_shard=1), "pipeline parallelism is not supported"),
    (2, dict(grad_compression="bf16"), "use FSDP2; set parallel.fsdp_reduce_dtype=bf16"),
])
def test_invalid_degree_combinations_say_what_to_change(world, degrees, match):
    with pytest.raises(DistributedError, match=match):
        dims(world, **degrees)


@pytest.mark.parametrize("model,seq_len,match", [
    (dict(n_head=6, d_model=48), 16, r"tp=4 does not divide model.n_head \(attention heads\) = 6.*e.g. 3"),
    (dict(n_head=4, n_kv_head=2, style="llama"), 16, r"model.n_kv_head \(key/value heads\) = 2"),
    (dict(n_head=4), 18, r"train.seq_len \(sequence parallel splits it\) = 18"),
    (dict(style="lstm"), 16, "needs a transformer"),
])
def test_tensor_parallel_checks_the_model(model, seq_len, match):
    with pytest.raises(DistributedError, match=match):
        dims(4, tp=4).check_model(ModelConfig(**model), seq_len)


def test_rank_coordinates_put_tensor_parallel_innermost():
    d = dims(8, dp_replicate=2, dp_shard=2, tp=2)
    assert d.coordinates(5) == {"dp_replicate": 1, "dp_shard": 0, "tp": 1}
    # Tensor-parallel peers read the same data; data-parallel ranks read disjoint slices.
    assert [d.dp_rank(r) for r in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_backend_is_chosen_from_the_device():
    assert select_backend(torch.device("cpu")) == "gloo"
    assert select_backend(torch.device("cuda", 0)) == "cpu:gloo,cuda:nccl"
    with pytest.raises(DistributedError, match="nccl needs CUDA"):
        select_backend(torch.device("cpu"), "nccl")


def test_launch_env_from_torchrun_variables():
    assert launch_env({}) is None
    env = launch_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "TORCHELASTIC_RESTART_COUNT": "2"})
    assert env == LaunchEnv(rank=3, world_size=4, local_rank=1, local_world_size=4, restart_count=2)
    with pytest.raises(DistributedError, match="outside WORLD_SIZE"):
        launch_env({"RANK": "4", "WORLD_SIZE": "4"})


def test_bad_degrees_fail_before_any_rendezvous(monkeypatch):
    from clusterlm.api.train import train

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")  # no MASTER_ADDR: a rendezvous would fail, not these checks
    with pytest.raises(DistributedError, match="multiply to 4"):
        train(RunConfig(parallel=ParallelConfig(dp_shard=2, tp=2)))
    with pytest.raises(DistributedError, match="model.n_head"):
        train(RunConfig(parallel=ParallelConfig(tp=2), model=ModelConfig(n_head=3, d_model=48),
                        train={"seq_len": 16, "max_steps": 100}))
    one = join(ParallelConfig(), "cpu", LaunchEnv(0, 1, 0, 1, 0))  # one worker: no group
    assert not one.distributed and one.backend is None


def test_train_cli_reports_bad_degrees_as_one_line(monkeypatch, capsys, tmp_path):
    from clusterlm.cli.main import main

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "parallel.tp=3", f"train.out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: parallel degrees") and "world size" in err[0]


def test_state_split_round_trips_through_json():
    import json

    state = {"step": 3, "betas": (0.9, 0.95), "rng": {"torch": torch.arange(4, dtype=torch.uint8)},
             "groups": [{"lr": 1e-3, "params": ["a", "b"]}], "best": None}
    skeleton, tensors = split_tensors(state)
    assert list(tensors) == ["rng.torch"]
    back = merge_tensors(json.loads(json.dumps(skeleton)), tensors)
    assert back["betas"] == [0.9, 0.95] and back["rng"]["torch"] is tensors["rng.torch"] and back["best"] is None
    with pytest.raises(CheckpointError, match="cannot checkpoint a value of type object"):
        split_tensors({"x": object()})


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_dcp_index_reader_refuses_foreign_pickles():
    with pytest.raises(CheckpointError, match="posix.system|os.system"):
        _MetadataUnpickler(io.BytesIO(pickle.dumps(_Evil()))).load()
    assert _MetadataUnpickler(io.BytesIO(pickle.dumps(torch.Size([2, 3])))).load() == torch.Size([2, 3])


def test_comm_recorder_merges_overlapping_collectives():
    rec = CommRecorder()
    rec.record(ALL_REDUCE, 1000, 2, 0.0, 1.0)
    rec.record(ALL_REDUCE, 1000, 2, 0.5, 1.5)  # overlaps the first: 1.5 s of comm, not 2
    rec.record(ALL_GATHER, 400, 4, 3.0, 3.25)
    rec.record(ALL_GATHER, 400, 1, 3.0, 9.0)  # a group of one moves nothing: not recorded
    step = rec.take()
    assert step.bytes == 2400 and step.count_by_kind == {ALL_REDUCE: 2, ALL_GATHER: 1}
    assert step.comm_time_s == pytest.approx(1.75)
    assert step.wire_bytes == pytest.approx(2000 * wire_factor(ALL_REDUCE, 2) + 400 * 3 / 4)
    assert rec.take().count == 0
