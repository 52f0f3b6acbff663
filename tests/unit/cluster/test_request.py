"""`clusterlm plan` flags ↔ PlanRequest ↔ planner inputs, and back to the exact command line."""

from __future__ import annotations

import argparse
import shlex

import pytest

from clusterlm.cli.plan import add_arguments
from clusterlm.cluster import request, validation
from clusterlm.cluster.request import PlanRequest
from clusterlm.errors import ConfigError, UsageError


def _parse(argv: list[str]) -> PlanRequest:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return request.from_namespace(parser.parse_args(argv))


def test_every_published_run_round_trips_through_the_command_line():
    for run in validation.load_runs():
        argv = shlex.split(run.command)[2:]
        assert _parse(argv) == run.request, run.id


def test_every_setting_has_a_flag():
    req = PlanRequest(model="llama3-405B", overrides=("model.dropout=0.1",), cluster="dgx-h100", gpus=1024,
                      tokens="15T", batch=512, seq=8192, parallel="t=8,c=2,p=8", micro_batch=1, interleave=8,
                      stage_layers=",".join(["1"] + ["2"] * 62 + ["1"]), pipeline_split="balanced",
                      recompute="full", recompute_fraction=0.5, sequence_parallel=True, zero=3, dp_shard=4,
                      precision="bf16", grad_dtype="fp32", fp8=True, attention="flash3", elementwise="eager",
                      tp_overlap=True, dp_overlap=False, grad_accum_fusion=False, batch_rounding="up",
                      batch_rampup="64,64,1000", vocab=128256)
    assert _parse(request.to_argv(req)) == req
    assert request.command(req).startswith("clusterlm plan --model llama3-405B --cluster dgx-h100 --gpus 1024")


def test_resolve_builds_the_layout():
    res = request.resolve(PlanRequest(model="llama3-405B", cluster="dgx-h100", gpus=1024, batch=512, seq=8192,
                                      parallel="t=8,c=2,p=8", interleave=8, zero=1, dp_shard=2, fp8=True))
    e = res.execution
    assert (e.tp, e.cp, e.pp, e.dp, e.interleave, e.zero, e.dp_shard, e.fp8) == (8, 2, 8, 8, 8, 1, 2, True)
    assert res.workload.global_batch == 512 and res.cluster.num_gpus == 1024


def test_a_model_from_overrides_alone():
    model, _, _ = request.resolve_model(None, None, ("model.style=llama", "model.n_layer=3", "model.d_model=64",
                                                     "model.n_head=4", "model.vocab_size=100"))
    assert (model.style, model.n_layer, model.vocab_size) == ("llama", 3, 100)
    with pytest.raises(UsageError, match="--model is required"):
        request.resolve_model(None, None, ())
    with pytest.raises(ConfigError, match="unknown config key 'model.n_layers'"):
        request.resolve_model("tiny", 10, ("model.n_layers=3",))


def test_parallel_degrees_and_rampup_parsing():
    assert request.parse_parallel("t=8,c=2,p=16,v=4") == {"tp": 8, "cp": 2, "pp": 16, "interleave": 4}
    assert request.complete_degrees({"tp": 8, "cp": 2, "pp": 16}, 16384) == {"tp": 8, "cp": 2, "pp": 16, "dp": 64}
    assert request.parse_rampup("192,16,9765625") == (192, 16, 9765625)
    with pytest.raises(ConfigError, match="START,INCREMENT,SAMPLES"):
        request.parse_rampup("192,16")
    with pytest.raises(ConfigError, match="unknown plan setting"):
        PlanRequest.from_mapping({"cluster": "x", "gpu": 8})
