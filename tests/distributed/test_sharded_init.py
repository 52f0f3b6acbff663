"""Sharded initialisation: every layout starts from the one-process weights, and no rank holds more
than its share (`train/setup.py`: meta device → parallelisms → `to_empty` → `init_weights`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import run_workers, train_args


def init_job(nprocs: int, data: Path, out: Path, *overrides: str, steps: int = 0) -> list[dict]:
    spec = {"overrides": train_args(data, out, "model.tie_embeddings=false", *overrides), "steps": steps}
    return run_workers(nprocs, ["init", json.dumps(spec)], timeout_s=240)


@pytest.mark.parametrize("nprocs,overrides", [
    (4, ["parallel.dp_shard=2", "parallel.tp=2", "train.micro_batch=2"]),
    (2, ["parallel.pp=2", "parallel.dp_shard=1"]),
])
def test_sharded_init_equals_the_one_process_weights(dist_data, tmp_path, nprocs, overrides):
    one = init_job(1, dist_data, tmp_path / "one")[0]["digests"]
    sharded: dict[str, str] = {}
    for rank in init_job(nprocs, dist_data, tmp_path / "sharded", *overrides):  # each gathers what its stages hold
        for name, digest in rank["digests"].items():
            assert sharded.setdefault(name, digest) == digest, name
    assert sharded == one and len(one) > 10


def test_fsdp_parameters_and_optimizer_state_fall_as_one_over_n(dist_data, tmp_path):
    """Bytes of parameters + AdamW moments each rank holds after a step, for 1, 2 and 4 FSDP2 ranks."""
    held = {}
    for n in (1, 2, 4):
        ranks = init_job(n, dist_data, tmp_path / f"n{n}", f"train.micro_batch={4 // n}", steps=1)
        held[n] = max(r["held_bytes"]["params"] + r["held_bytes"]["optimizer"] for r in ranks)
    ratios = {n: held[n] / held[1] for n in (2, 4)}
    # Exactly 1/N but for uneven rows (tensors whose first dimension N does not divide) and the
    # per-parameter AdamW step counters, which every rank keeps whole.
    assert ratios[2] == pytest.approx(1 / 2, rel=0.05) and ratios[4] == pytest.approx(1 / 4, rel=0.08), ratios
