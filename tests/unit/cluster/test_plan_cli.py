"""`clusterlm plan` and `clusterlm cluster` end to end (in-process, through the dispatcher)."""

from __future__ import annotations

import json

import pytest
import yaml

from clusterlm.cli.main import main
from clusterlm.config.run import load_run_config

from test_planner import JSON_KEYS


def _json(capsys, argv):
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def test_plan_json_for_a_published_layout(capsys):
    code, out = _json(capsys, ["plan", "--model", "gpt3-175B", "--cluster", "dgx-a100-superpod", "--gpus", "1024",
                               "--batch", "1536", "--seq", "2048", "--parallel", "t=8,p=8", "--recompute", "selective",
                               "--sequence-parallel", "--tokens", "300e9", "--json"])
    assert code == 0 and JSON_KEYS <= set(out)
    assert out["parallel"] == {**out["parallel"], "t": 8, "p": 8, "d": 16}
    assert out["fits"] and 0.3 < out["mfu"] < 0.7
    assert out["days"] == pytest.approx(out["steps"] * out["step_time_s"] / 86400)
    lo, hi = out["range"]["step_time_s"]  # ±1σ of the held-out errors
    assert lo < out["step_time_s"] < hi and out["range"]["sigma_time"] > 0
    assert out["range"]["tokens_per_s"][0] < out["tokens_per_s"] < out["range"]["tokens_per_s"][1]


def test_plan_llama3_405b_as_meta_ran_it(capsys):
    # 126 layers on 16 stages, a batch d·b does not divide: both used to be refused.
    code, out = _json(capsys, ["plan", "--model", "llama3-405B", "--cluster", "meta-h100-roce", "--gpus", "8192",
                               "--batch", "2050", "--seq", "8192", "--parallel", "t=8,p=16", "--sequence-parallel",
                               "--zero", "1", "--tokens", "15.6T", "--json"])
    assert code in (0, 1) and out["parallel"]["stage_layers"] == [7] + [8] * 14 + [7]
    assert out["global_batch"] == 2050 and out["effective_global_batch"] == 2048
    assert out["tokens_per_step"] == 2048 * 8192
    capsys.readouterr()
    assert main(["plan", "--model", "llama3-405B", "--cluster", "meta-h100-roce", "--gpus", "8192", "--batch",
                 "2050", "--seq", "8192", "--parallel", "t=8,p=16"]) in (0, 1)
    text = capsys.readouterr().out
    assert "2048 sequences per step" in text and "7,8,8" in text and "±" in text


def test_plan_search_json_and_chart(tmp_path, capsys):
    chart = tmp_path / "search.png"
    code, out = _json(capsys, ["plan", "--model", "llama2-7B", "--cluster", "dgx-h100", "--gpus", "16",
                               "--batch", "64", "--seq", "4096", "--search", "--chart", str(chart), "--json"])
    assert code == 0 and JSON_KEYS <= set(out)
    assert out["search"]["fitting"] >= len(out["search"]["ranked"]) > 0
    assert out["tokens_per_s"] == max(r["tokens_per_s"] for r in out["search"]["ranked"])
    assert chart.read_bytes()[:4] == b"\x89PNG"


def test_plan_emit_writes_a_loadable_training_config(tmp_path, capsys):
    out_dir = tmp_path / "plan"
    code = main(["plan", "--model", "llama3-8B", "--cluster", "dgx-h100", "--gpus", "16", "--batch", "32",
                 "--seq", "8192", "--parallel", "t=2,d=8", "--zero", "3", "--recompute", "full", "--steps", "1000",
                 "--sequence-parallel", "--emit", str(out_dir)])
    assert code == 0
    capsys.readouterr()
    cfg = load_run_config(out_dir / "config.yaml")
    assert (cfg.parallel.tp, cfg.parallel.pp, cfg.parallel.dp_shard, cfg.parallel.dp_replicate) == (2, 1, 8, 1)
    assert cfg.train.seq_len == 8192 and cfg.train.batch_size == 32 and cfg.train.max_steps == 1000
    assert cfg.train.activation_checkpointing and cfg.model.preset == "llama3-8B"
    sbatch = (out_dir / "job.sbatch").read_text()
    assert "#SBATCH --nodes=2" in sbatch and "--nproc-per-node=8" in sbatch and "config.yaml" in sbatch
    assert "--nnodes=2" in (out_dir / "launch.sh").read_text()
    assert json.loads((out_dir / "plan.json").read_text())["fits"]
    assert (out_dir / "plan.png").exists()
    # refusing to clobber
    assert main(["plan", "--model", "llama3-8B", "--cluster", "dgx-h100", "--gpus", "16", "--batch", "32",
                 "--emit", str(out_dir)]) == 2
    assert "exists" in capsys.readouterr().err


def test_plan_from_a_run_config_uses_its_train_settings(tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"model": {"preset": "tiny"}, "data": {"vocab_size": 512},
                                   "train": {"seq_len": 64, "micro_batch": 4, "grad_accum": 2, "max_steps": 10,
                                             "warmup_steps": 1, "precision": "fp32"}}))
    code, out = _json(capsys, ["plan", "--model", str(run), "--cluster", "local", "--json"])
    assert code == 0
    assert (out["seq_len"], out["global_batch"], out["parallel"]["micro_batch"]) == (64, 8, 4)
    assert out["parallel"]["precision"] == "fp32" and out["fits"]


@pytest.mark.parametrize("argv,message", [
    (["--model", "gpt3-175B", "--cluster", "dgx-a100-superpod", "--gpus", "64", "--batch", "64",
      "--parallel", "t=7,p=1"], "does not divide"),
    (["--model", "gpt3-175B", "--cluster", "dgx-a100-superpod", "--gpus", "64", "--batch", "64",
      "--parallel", "t=8,p=5"], "does not divide"),
    (["--model", "megatron-530B", "--cluster", "dgx-a100-superpod", "--gpus", "256", "--batch", "256",
      "--parallel", "t=8,p=4,d=8", "--pipeline-split", "even"], "layers (105) are not divisible"),
    (["--model", "gpt3-175B", "--cluster", "dgx-a100-superpod", "--gpus", "64", "--batch", "63",
      "--parallel", "t=8,p=1", "--batch-rounding", "exact"], "not divisible by d·b"),
    (["--model", "llama3-405B", "--cluster", "dgx-h100", "--gpus", "1024", "--batch", "64",
      "--parallel", "t=8,p=16", "--stage-layers", "8,8"], "stage split (--stage-layers, parallel.pp_stage_layers) has 2 entries"),
    (["--model", "llama3-8B", "--cluster", "dgx-a100-superpod", "--gpus", "8", "--batch", "8", "--fp8"],
     "no FP8 tensor cores"),
    (["--model", "llama3-8B", "--cluster", "dgx-h100", "--gpus", "8", "--batch", "8", "--dp-shard", "3",
      "--zero", "3"], "--dp-shard 3 must divide"),
    (["--cluster", "dgx-h100", "--gpus", "8", "--batch", "8", "train.lr=3"], "plan overrides must set model keys"),
    (["--model", "gpt3-175B", "--cluster", "dgx-a100-superpod", "--gpus", "64", "--batch", "64",
      "--parallel", "t=8,p=4,d=4"], "t·p·d = 8·4·4 = 128 but the cluster has 64"),
    (["--model", "gpt3-1T", "--cluster", "dgx-a100-superpod", "--batch", "8"], "unknown model preset"),
    (["--model", "gpt3-175B", "--cluster", "dgx-a1000", "--batch", "8"], "unknown cluster 'dgx-a1000'"),
    (["--model", "gpt3-175B", "--cluster", "dgx-a100-superpod", "--batch", "-8"], "--batch"),
    (["--model", "gpt3-175B", "--cluster", "dgx-a100-superpod", "--parallel", "t=0"], "'t=0' must be ≥ 1"),
    (["--model", "gpt3-175B", "--cluster", "dgx-a100-superpod", "--seq", "0"], "--seq"),
    (["--model", "tiny", "--cluster", "local", "--batch", "8"], "vocab_size"),
])
def test_plan_errors_are_one_line_exit_2(capsys, argv, message):
    assert main(["plan", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_plan_does_not_fit_exits_1(capsys):
    code = main(["plan", "--model", "gpt3-175B", "--cluster", "dgx-a100-superpod", "--gpus", "8", "--batch", "8",
                 "--parallel", "t=8", "--json"])
    assert code == 1 and json.loads(capsys.readouterr().out)["fits"] is False


def test_plan_validate_json(capsys):
    code, out = _json(capsys, ["plan", "--validate", "--json"])
    assert code == 0 and set(out) == {"summary", "bands", "rows"}
    assert list(out["summary"])[0] == "held_out/speed"  # the headline comes first
    assert out["summary"]["calibration/speed"]["mean_abs_error"] < 0.05
    row = out["rows"][0]
    assert row["command"].startswith("clusterlm plan ") and {"source", "org", "year", "hardware"} <= set(row)


def test_cluster_show(tmp_path, capsys):
    diagram = tmp_path / "topo.png"
    assert main(["cluster", "show", "tpu-v4-pod-slice", "--diagram", str(diagram)]) == 0
    assert "TPU v4" in capsys.readouterr().out and diagram.exists()
    code, out = _json(capsys, ["cluster", "show", "dgx-a100-superpod", "--gpus", "64", "--json"])
    assert code == 0 and out["num_gpus"] == 64 and out["accelerator"]["name"] == "a100-80gb"
    assert main(["cluster", "show", "no-such-cluster"]) == 2


def test_plan_takes_degrees_from_the_run_config(tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"model": {"preset": "gpt2-124M"}, "parallel": {"tp": 2},
                                   "train": {"seq_len": 1024, "micro_batch": 4, "grad_accum": 2}}))
    code, out = _json(capsys, ["plan", "--model", str(run), "--cluster", "dgx-h100", "--gpus", "8", "--json"])
    assert code == 0
    par = out["parallel"]
    assert (par["t"], par["d"], par["zero"]) == (2, 4, 3)  # dp_shard -1 → FSDP over the rest
    assert out["global_batch"] == 4 * 2 * 4  # micro-batch × accumulation × data-parallel ranks
