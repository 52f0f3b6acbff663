"""Every layout — pipeline parallelism included — trains and validates like one process (gloo).

Every run trains the same untied 2-layer model on the same windows: the global micro-batch is 4
sequences (one process with micro_batch 4, two data-parallel ranks with 2 each) and the global
batch 8 (two micro-batches per step: the pipeline's m = 2). So each layout — pipeline stages,
their schedule, FSDP2 or HSDP beside them, tensor parallel inside them — must reproduce the one-
process loss curve, validation losses and final weights to float tolerance. Validation scores
the same windows in every layout (eval/runner.py), so its losses must agree too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from harness import run_workers, train_args
from safetensors.torch import load_file

from clusterlm.checkpoint.load import load_model

TOLERANCE = dict(atol=2e-5, rtol=1e-5)  # fp32; observed differences ≲ 1e-6
UNTIED = "model.tie_embeddings=false"  # the first and the last stage cannot share a tensor


def pp_job(nprocs: int, data: Path, out: Path, *overrides: str, **faults: int) -> list[dict]:
    spec = {"overrides": train_args(data, out, UNTIED, "train.eval_every=4", *overrides), **faults}
    return run_workers(nprocs, ["train", json.dumps(spec)], timeout_s=300)


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def curve(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    train = [r["loss"] for r in records(run_dir, "train")]
    val = [r["val_loss"] for r in records(run_dir, "val")]
    assert len(train) == 8 and len(val) == 2  # steps 1…8; validation at 4 and 8
    return torch.tensor(train), torch.tensor(val)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = run_dir / "checkpoints" / "step-0000008"
    if (ckpt / "model.safetensors").is_file():
        return load_file(str(ckpt / "model.safetensors"))
    return load_model(ckpt).model.state_dict()  # DCP shards, consolidated


@pytest.fixture(scope="module")
def reference(dist_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("pp-reference") / "run"
    pp_job(1, dist_data, out)
    return out


def assert_matches(run_dir: Path, reference: Path) -> None:
    (train, val), (want_train, want_val) = curve(run_dir), curve(reference)
    torch.testing.assert_close(train, want_train, **TOLERANCE)
    torch.testing.assert_close(val, want_val, **TOLERANCE)
    got, want = final_weights(run_dir), final_weights(reference)
    assert got.keys() == want.keys()
    for name in want:  # (the key biases get ~zero gradient — softmax ignores them — so they are ~1e-6 noise)
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout,nprocs,overrides", [
    # Without pipelining too: validation scores the same windows in every layout.
    ("dp_replicate=2", 2, ["parallel.dp_replicate=2", "parallel.dp_shard=1", "train.micro_batch=2"]),
    ("dp_shard=2", 2, ["parallel.dp_shard=2", "train.micro_batch=2"]),
    ("tp=2", 2, ["parallel.tp=2", "parallel.dp_shard=1"]),
    ("pp=2 (1f1b)", 2, ["parallel.pp=2", "parallel.dp_shard=1"]),
    ("pp=2 (interleaved_1f1b, v=2)", 2, ["parallel.pp=2", "parallel.dp_shard=1", "parallel.pp_virtual_stages=2",
                                         "parallel.pp_schedule=interleaved_1f1b"]),
    ("pp=2 dp_shard=2 (gpipe)", 4, ["parallel.pp=2", "parallel.dp_shard=2", "train.micro_batch=2",
                                    "parallel.pp_schedule=gpipe"]),
    ("pp=2 tp=2 (1f1b)", 4, ["parallel.pp=2", "parallel.tp=2", "parallel.dp_shard=1"]),
    ("pp=2 dp_replicate=2 (1f1b)", 4, ["parallel.pp=2", "parallel.dp_replicate=2", "parallel.dp_shard=1",
                                       "train.micro_batch=2"]),
    ("pp=2 dp_shard=2 tp=2 (1f1b)", 8, ["parallel.pp=2", "parallel.dp_shard=2", "parallel.tp=2",
                                        "train.micro_batch=2"]),
])
def test_layouts_match_one_process_in_losses_validation_and_weights(dist_data, tmp_path, reference, layout, nprocs, overrides):
    out = tmp_path / "run"
    result = pp_job(nprocs, dist_data, out, *overrides)
    assert result[0]["summary"]["parallel"] == layout
    assert_matches(out, reference)


@pytest.mark.parametrize("first,then", [
    ((2, ["parallel.pp=2", "parallel.dp_shard=1"]), (1, [])),
    ((4, ["parallel.pp=2", "parallel.tp=2", "parallel.dp_shard=1"]), (4, ["parallel.dp_shard=4", "train.micro_batch=1"])),
])
def test_pipeline_checkpoints_resume_in_another_layout(dist_data, tmp_path, reference, first, then):
    out = tmp_path / "run"
    pp_job(first[0], dist_data, out, *first[1], stop_at=4)
    assert (out / "checkpoints" / "step-0000004" / "dcp" / ".metadata").is_file()
    result = pp_job(then[0], dist_data, out, *then[1])
    assert result[0]["step"] == 8
    train, _ = curve(out)
    torch.testing.assert_close(train, curve(reference)[0], **TOLERANCE)
