"""Loss parity: DDP, FSDP2, tensor parallel and FSDP2 × TP match one process on the same global batch.

Each job runs `parallelize` on real gloo process groups (127.0.0.1, free port, 60 s collective
timeout, hard job timeout) and trains 10 AdamW steps with gradient clipping; the reference
trains the same model on the whole global batch in this process. fp32 everywhere, so the
only differences are summation orders: losses must agree to 1e-5 (observed ≲ 1e-6).
"""

from __future__ import annotations

import json

import parity_loop as loop
import pytest
import torch
from harness import run_workers

STEPS = 10
GLOBAL_BATCH = 8
TOLERANCE = dict(atol=1e-5, rtol=1e-5)


def reference_losses(model: str) -> list[float]:
    torch.manual_seed(0)
    tcfg = loop.train_config()
    m = loop.build(loop.model_config(model), seed=tcfg.seed)
    return loop.run_steps(m, m, tcfg, loop.batches(STEPS, GLOBAL_BATCH, m.config.vocab_size))


def run_parity(nprocs: int, runs: dict) -> dict:
    for run in runs.values():
        run.setdefault("global_batch", GLOBAL_BATCH)
    results = run_workers(nprocs, ["parity", json.dumps({"steps": STEPS, "runs": runs})], timeout_s=240)
    for other in results[1:]:  # every rank logged the same global losses
        for name in runs:
            assert other["runs"][name]["losses"] == results[0]["runs"][name]["losses"]
    return results[0]["runs"]


def assert_parity(got: list[float], want: list[float]) -> None:
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), **TOLERANCE)


def test_two_process_ddp_fsdp_tp_match_one_process():
    runs = run_parity(2, {
        "ddp": {"model": "gpt2", "parallel": {"dp_replicate": 2, "dp_shard": 1}},
        "ddp_accum": {"model": "gpt2", "parallel": {"dp_replicate": 2, "dp_shard": 1}, "grad_accum": 2},
        "ddp_bf16": {"model": "gpt2", "parallel": {"dp_replicate": 2, "dp_shard": 1, "grad_compression": "bf16"}},
        "fsdp": {"model": "gpt2", "parallel": {"dp_shard": 2}},
        "fsdp_accum": {"model": "gpt2", "parallel": {"dp_shard": 2}, "grad_accum": 2},
        "fsdp_bf16": {"model": "gpt2", "parallel": {"dp_shard": 2, "fsdp_param_dtype": "bf16"}},
        "tp": {"model": "gpt2", "parallel": {"tp": 2, "dp_shard": 1}},
    })
    gpt2 = reference_losses("gpt2")
    for name in ("ddp", "ddp_accum", "fsdp", "fsdp_accum", "tp"):
        assert_parity(runs[name]["losses"], gpt2)
    assert [runs[n]["kind"] for n in ("ddp", "fsdp", "tp")] == ["ddp", "fsdp", "tp"]
    # bf16 gradient compression: half the all-reduce bytes, a small (not zero) loss difference.
    ddp, bf16 = runs["ddp"]["comm"], runs["ddp_bf16"]["comm"]
    assert bf16["bytes"]["all_reduce"] * 2 == ddp["bytes"]["all_reduce"]
    drift = max(abs(a - b) for a, b in zip(runs["ddp_bf16"]["losses"], gpt2))
    assert 0 < drift < 5e-3
    # FSDP2 MixedPrecisionPolicy: weights gathered in bf16 (half the bytes), gradients reduced in fp32.
    fsdp, fsdp_bf16 = runs["fsdp"]["comm"], runs["fsdp_bf16"]["comm"]
    assert fsdp_bf16["bytes"]["all_gather"] * 2 == fsdp["bytes"]["all_gather"]
    assert fsdp_bf16["bytes"]["reduce_scatter"] == fsdp["bytes"]["reduce_scatter"]
    assert 0 < max(abs(a - b) for a, b in zip(runs["fsdp_bf16"]["losses"], gpt2)) < 5e-2
    # Accumulation does not add gradient syncs: DDP all-reduces and FSDP reduce-scatters once per step.
    assert runs["ddp_accum"]["comm"]["count"] == ddp["count"]
    assert runs["ddp_accum"]["comm"]["bytes"] == ddp["bytes"]
    fsdp_accum = runs["fsdp_accum"]["comm"]
    assert fsdp_accum["count"]["reduce_scatter"] == fsdp["count"]["reduce_scatter"]
    assert fsdp_accum["count"]["all_gather"] == 2 * fsdp["count"]["all_gather"]  # weights per micro-batch
    # DDP all-reduces every gradient once: the measured bytes are the model's gradient bytes.
    n_params = sum(p.numel() for p in loop.build(loop.model_config("gpt2")).parameters())
    assert ddp["bytes"]["all_reduce"] == 4 * n_params
    # Tensor parallel moves activations: all-gathers and reduce-scatters inside forward/backward.
    assert runs["tp"]["comm"]["count"]["reduce_scatter"] > 0 and runs["tp"]["comm"]["count"]["all_gather"] > 0


def test_four_process_fsdp_times_tp_matches_one_process():
    runs = run_parity(4, {"fsdp_tp": {"model": "llama", "parallel": {"dp_shard": 2, "tp": 2}}})
    assert_parity(runs["fsdp_tp"]["losses"], reference_losses("llama"))
    assert runs["fsdp_tp"]["kind"] == "fsdp"


def test_two_process_tp_llama_matches_one_process():
    runs = run_parity(2, {"tp_llama": {"model": "llama", "parallel": {"tp": 2, "dp_shard": 1}, "grad_accum": 2}})
    assert_parity(runs["tp_llama"]["losses"], reference_losses("llama"))


def test_four_process_variants_match_one_process():
    """gpt2 (tied head, learned positions) under FSDP × TP and HSDP × TP; FSDP2 option variants;
    activation checkpointing inside FSDP2 × TP."""
    runs = run_parity(4, {
        "fsdp_tp_gpt2": {"model": "gpt2", "parallel": {"dp_shard": 2, "tp": 2}},
        "hsdp_tp": {"model": "gpt2", "parallel": {"dp_replicate": 2, "dp_shard": 1, "tp": 2}},
        "fsdp4_never_prefetch": {"model": "llama", "parallel": {"dp_shard": 4, "fsdp_reshard_after_forward": "never",
                                                               "fsdp_prefetch": 1}},
        "fsdp4_always": {"model": "llama", "parallel": {"dp_shard": 4, "fsdp_reshard_after_forward": "always"}},
        "fsdp_tp_ac": {"model": "llama", "parallel": {"dp_shard": 2, "tp": 2},
                       "train": {"activation_checkpointing": True}},
    })
    gpt2, llama = reference_losses("gpt2"), reference_losses("llama")
    assert_parity(runs["fsdp_tp_gpt2"]["losses"], gpt2)
    assert_parity(runs["hsdp_tp"]["losses"], gpt2)
    assert_parity(runs["fsdp4_never_prefetch"]["losses"], llama)
    assert_parity(runs["fsdp4_always"]["losses"], llama)
    assert_parity(runs["fsdp_tp_ac"]["losses"], llama)  # TP → activation checkpointing → FSDP2
    # Keeping weights gathered after forward saves the backward re-gathers.
    never, always = runs["fsdp4_never_prefetch"]["comm"], runs["fsdp4_always"]["comm"]
    assert never["bytes"]["all_gather"] < always["bytes"]["all_gather"]
