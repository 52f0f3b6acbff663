"""Malformed input to every verb but prepare/plan/launch (their own suites cover those): each case
is one `error:` line, exit 2, no traceback, and leaves every guarded output byte for byte as it was."""

from __future__ import annotations

import json

import pytest
from fuzzhelp import assert_one_error, run_cli, tree_sha256

pytestmark = pytest.mark.timeout(60)

S = "\ud800"  # a lone surrogate: what bytes that are not UTF-8 in argv become
# (argv with {run} = a trained run dir, {root} = the workspace, {file} = a plain file; words in the error)
CASES = [
    # generate: sampling numbers, seeds, prompts, devices, checkpoints
    (["generate", "{run}", "--prompt", "def", "--temperature", "nan"], "temperature"),
    (["generate", "{run}", "--prompt", "def", "--temperature", "1e-45"], "temperature"),
    (["generate", "{run}", "--prompt", "def", "--temperature", "-1"], "temperature"),
    (["generate", "{run}", "--prompt", "def", "--temperature", "inf"], "temperature"),
    (["generate", "{run}", "--prompt", "def", "--top-k", "0"], "top-k"),
    (["generate", "{run}", "--prompt", "def", "--top-p", "0"], "top-p"),
    (["generate", "{run}", "--prompt", "def", "--top-p", "nan"], "top-p"),
    (["generate", "{run}", "--prompt", "def", "--seed", str(2**70)], "seed"),
    (["generate", "{run}", "--prompt", "def", "--seed", str(-(2**64))], "seed"),
    (["generate", "{run}", "--prompt", "def", "--max-new-tokens", "-5"], "max-new-tokens"),
    (["generate", "{run}", "--prompt", "def", "--max-new-tokens", "many"], "invalid int"),
    (["generate", "{run}", "--prompt", f"a{S}b"], "lone surrogate"),
    (["generate", "{run}", "--prompt", ""], "empty"),
    (["generate", "{run}", "--prompt", "def", "--device", "mps"], "mps"),
    (["generate", "{run}", "--prompt", "def", "--device", "cuda:9"], "--device"),
    (["generate", "{run}", "--prompt", "def", "--device", "toaster"], "--device"),
    (["generate", "{root}/missing", "--prompt", "def"], "does not exist"),
    (["generate", "{file}", "--prompt", "def"], "neither a checkpoint"),
    (["generate", "{root}/data", "--prompt", "def"], "neither a checkpoint"),
    # eval
    (["eval", "{run}", "--batch-size", "0"], "--batch-size"), (["eval", "{run}", "--batch-size", "10**9"], "invalid int"),
    (["eval", "{run}", "--batch-size", "100000000000"], "--batch-size"), (["eval", "{run}", "--seq-len", "0"], "--seq-len"),
    (["eval", "{run}", "--seq-len", "1000000000"], "--seq-len"), (["eval", "{run}", "--batches", "-1"], "--batches"),
    (["eval", "{run}", "--device", "mps"], "mps"), (["eval", "{run}", "--split", ","], "--split"),
    (["eval", "{run}", "--split", "test"], "train and/or val"), (["eval", "{run}", "--data", "{root}/missing"], "not found"),
    (["eval", "{run}", "--seq-len", "999"], "context"), (["eval", "{file}"], "neither a checkpoint"),
    # export (outputs that exist are guarded below)
    (["export", "{run}", "--out", "{file}/m.safetensors"], "a-file: already exists"),
    (["export", "{run}", "--out", "{root}/m.bin", "--format", "safetensors"], ".safetensors"),
    (["export", "{root}/missing", "--out", "{root}/x.safetensors"], "does not exist"),
    # serve: every bad option fails before anything listens
    (["serve", "{run}", "--port", "-1"], "--port"), (["serve", "{run}", "--port", "70000"], "--port"),
    (["serve", "{run}", "--max-batch", "0"], "--max-batch"), (["serve", "{run}", "--max-batch", "1000000000"], "--max-batch"),
    (["serve", "{run}", "--max-new-tokens-limit", "0"], "--max-new-tokens-limit"),
    (["serve", "{run}", "--max-body-bytes", "0"], "--max-body-bytes"), (["serve", "{run}", "--api-key", " "], "API key"),
    (["serve", "{run}", "--device", "mps", "--port", "0"], "mps"), (["serve", "{root}/missing", "--port", "0"], "does not exist"),
    (["serve", "{run}", "--host", "no.such.host.invalid", "--port", "0"], "no.such.host.invalid"),
    # quickstart: checked before any work
    (["quickstart", "--max-new-tokens", "-1"], "--max-new-tokens"),
    (["quickstart", "--max-new-tokens", "100000000000"], "--max-new-tokens"),
    (["quickstart", "--prompt", f"x{S}"], "lone surrogate"), (["quickstart", "train.no_such=1"], "unknown config key"),
    (["quickstart", "--config", "{root}/missing.yaml"], "not found"), (["quickstart", "notakeyvalue"], "section.key=value"),
    # fine-tuning numbers (checked before the checkpoint is read)
    *[(["finetune", "sft", "{run}", "--data", "{file}", "--out", "{root}/ft", flag, value], flag) for flag, value in (
        ("--lr", "nan"), ("--lr", "-1"), ("--lr", "inf"), ("--epochs", "0"), ("--epochs", "inf"), ("--max-steps", "0"),
        ("--max-minutes", "nan"), ("--batch-size", "0"), ("--batch-size", "100000000"), ("--warmup-fraction", "1"),
        ("--weight-decay", "-1"), ("--grad-clip", "nan"), ("--seed", str(2**70)), ("--seed", "-1"),
        ("--log-every", "0"), ("--eval-every", "0"), ("--lora-rank", "0"), ("--lora-alpha", "0"),
        ("--lora-dropout", "1"), ("--context", "1"))],
    (["finetune", "classify", "{run}", "--data", "{file}", "--val", "{file}", "--out", "{root}/ft", "--lr", "nan"], "--lr"),
    (["finetune", "sft", "{run}", "--data", "{root}/missing.jsonl", "--out", "{root}/ft"], "missing.jsonl"),
    (["finetune", "sft", "{run}", "--data", "{file}", "--out", "{root}/ft", "--device", "mps"], "mps"),
    (["finetune", "data", "nonsense", "--out", "{root}/ft"], "invalid choice"),
    (["finetune", "sft", "{run}", "--data", "{file}", "--out", "{file}/ft"], "is a file, not a directory"),
    (["finetune", "data", "qa", "--out", "{file}/ft"], "is a file, not a directory"),
    (["eval-qa", "{run}", "--data", "{file}", "--predictions", "{file}/p.jsonl"], "is a file, not a directory"),
    # classify
    (["classify", "{run}", f"text{S}"], "lone surrogate"), (["classify", "{run}"], "at least one"),
    (["classify", "{run}", "x", "--data", "{file}"], "not both"), (["classify", "{run}", "--train", "{file}"], "--data"),
    (["classify", "{run}", " "], "at least one"),
    # eval-translate / eval-qa
    (["eval-translate", "{run}", "--data", "{file}", "--limit", "0"], "--limit"),
    (["eval-translate", "{run}", "--data", "{file}", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["eval-qa", "{run}", "--data", "{file}", "--limit", "-3"], "--limit"),
    (["eval-qa", "{run}", "--data", "{file}"], "not valid JSON"),
    # theory
    (["theory", "backprop", "--lr", "nan"], "--lr"), (["theory", "backprop", "--lr", "0"], "--lr"),
    (["theory", "backprop", "--lr", "inf"], "--lr"), (["theory", "classifier", "--epochs", "0"], "--epochs"),
    (["theory", "classifier", "--epochs", "100000000000000"], "--epochs"),
    (["theory", "classifier", "--batch-size", "9"], "--batch-size"), (["theory", "classifier", "--seed", "-1"], "--seed"),
    (["theory", "classifier", "--seed", str(2**70)], "--seed"), (["theory", "nonsense"], "invalid choice"),
    # cluster
    (["cluster", "probe", "--device", "cuda", "--quick"], "CUDA"), (["cluster", "probe", "--device", "mps"], "mps"),
    (["cluster", "show", "no-such-cluster", "--no-diagram"], "no-such-cluster"),
    (["cluster", "show", "dgx-h100", "--gpus", "0", "--no-diagram"], "--gpus"),
    (["cluster", "show", "{file}", "--no-diagram"], "a-file"),
    # the entry point itself
    (["nonsense"], "invalid choice"), ([], "required"), (["train", "--no-such-flag"], "unrecognized"),
]


def _argv(case, ws):
    return [a.format(run=ws / "gpt", root=ws, file=ws / "a-file") for a in case]


@pytest.mark.parametrize("argv, words", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_is_one_error_line_and_exit_2(ws, capfd, argv, words):
    before = tree_sha256(ws / "gpt")
    code, _, err = run_cli(capfd, *_argv(argv, ws))
    assert_one_error(code, err, words)
    assert tree_sha256(ws / "gpt") == before
    assert not (ws / "ft").exists()


# Every file a verb writes is checked for --overwrite, not only the main one.
GUARDED = [
    (["export", "{run}", "--out", "{out}/m.safetensors"], ["m.safetensors"]),
    (["export", "{run}", "--out", "{out}/m.safetensors"], ["m.json"]),  # the sidecars too
    (["export", "{run}", "--out", "{out}/m.safetensors"], ["m.tokenizer.json"]),
    (["export", "{run}", "--out", "{out}/hf", "--format", "hf"], ["hf/config.json"]),
    (["cluster", "probe", "--out", "{out}/spec.yaml", "--quick"], ["spec.yaml"]),
    (["cluster", "show", "dgx-h100", "--diagram", "{out}/topo.png"], ["topo.png"]),
    (["eval-translate", "{run}", "--data", "{out}/d.jsonl", "--predictions", "{out}/p.jsonl"], ["p.jsonl", "d.jsonl"]),
    (["eval-qa", "{run}", "--data", "{out}/d.jsonl", "--predictions", "{out}/p.jsonl"], ["p.jsonl", "d.jsonl"]),
    (["finetune", "sft", "{run}", "--data", "{out}/d.jsonl", "--out", "{out}/ft"], ["ft/summary.json", "d.jsonl"]),
    (["finetune", "data", "classify", "--out", "{out}/ft"], ["ft/train.jsonl"]),
]


@pytest.mark.parametrize("argv, existing", GUARDED, ids=[f"{c[0][0]} {c[1][0]}" for c in GUARDED])
def test_existing_outputs_are_not_overwritten_without_overwrite(ws, capfd, tmp_path, argv, existing):
    for name in existing:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text('{"mine": true}\n')
    before = tree_sha256(tmp_path)
    code, _, err = run_cli(capfd, *[a.format(run=ws / "gpt", out=tmp_path) for a in argv])
    assert_one_error(code, err, existing[0].split("/")[0], "--overwrite")
    assert tree_sha256(tmp_path) == before


def test_export_with_overwrite_replaces_every_output(ws, capfd, tmp_path):
    for name in ("m.safetensors", "m.json", "m.tokenizer.json"):
        (tmp_path / name).write_text("old")
    code, _, _ = run_cli(capfd, "export", ws / "gpt", "--out", tmp_path / "m.safetensors", "--overwrite")
    assert code == 0
    assert json.loads((tmp_path / "m.json").read_text())["step"] == 4
    assert not list(tmp_path.glob(".*"))  # written under temporary names, renamed into place


SERVER_CASES = [({"prompt": "def", "seed": 2**70}, "seed"), ({"prompt": "def", "temperature": 1e-45}, "temperature"),
                ({"prompt": "def", "temperature": float("nan")}, "temperature"), ({"prompt": "a\ud800"}, "JSON"),
                ({"prompt": "def", "top_p": 0}, "top_p"), ({"prompt": "def", "max_tokens": -1}, "max_tokens"),
                ({"prompt": "def", "seed": 2**70, "stream": True}, "seed")]


def test_the_server_refuses_bad_sampling_with_400s(ws):
    from fastapi.testclient import TestClient

    from clusterlm.generate.loading import eos_id, load_for_generation
    from clusterlm.serve.app import create_app

    loaded = load_for_generation(str(ws / "gpt"), "cpu")
    app = create_app(loaded.model, loaded.tokenizer, model_name="gpt", eos_id=eos_id(loaded.tokenizer),
                     max_new_tokens_limit=16)
    with TestClient(app) as client:
        for body, param in SERVER_CASES:
            text = json.dumps(body).replace("NaN", "1e999")  # only the NaN temperature case holds NaN
            response = client.post("/v1/completions", content=text, headers={"Content-Type": "application/json"})
            assert response.status_code == 400, (body, response.text)
            assert param in response.json()["error"]["message"] + str(response.json()["error"]["param"])
        ok = client.post("/v1/completions", json={"prompt": "def", "max_tokens": 2, "stream": True})
        assert ok.status_code == 200 and ok.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("verb", [["generate", "--prompt", "def"], ["eval"], ["export", "--out", "x.safetensors"]])
def test_a_checkpoint_whose_model_cannot_fit_is_refused_before_allocation(ws, capfd, tmp_path, verb):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(ws / "gpt" / "checkpoints" / "step-0000004", ckpt)
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["model"].update(d_model=131072, n_head=1, n_layer=4096)  # in range, but ~10 PB of weights
    (ckpt / "meta.json").write_text(json.dumps(meta))
    code, _, err = run_cli(capfd, verb[0], ckpt, *[a if a != "x.safetensors" else tmp_path / a for a in verb[1:]])
    assert_one_error(code, err, "GiB", "free")
    assert not (tmp_path / "x.safetensors").exists()
