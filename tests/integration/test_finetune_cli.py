"""`clusterlm finetune`, `classify`, `eval-translate`, `eval-qa` end to end on tiny data, and every
bad-input class: one `error:` line, exit status 2, nothing written."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from clusterlm.cli.main import main

TINY = ["model.preset=tiny", "model.n_layer=1", "model.d_model=32", "model.n_head=2", "train.seq_len=32",
        "train.micro_batch=2", "train.max_steps=4", "train.warmup_steps=1", "train.eval_every=4",
        "train.eval_batches=1", "train.ckpt_every=4", "train.precision=fp32", "train.tensorboard=false",
        "train.plots=false"]
WORDS = "the quick brown fox jumps over lazy dog def return class self value".split()
PAIRS = [{"prompt": f"translate {w}", "response": f"{w} 狐狸"} for w in WORDS]
LABELLED = ([{"text": f"the quick brown fox {w}", "label": "animal"} for w in WORDS]
            + [{"text": f"def f(x):\n    return {w}", "label": "code"} for w in WORDS])


@pytest.fixture(autouse=True)
def _single_threaded(one_thread):
    yield


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A prepared dataset, a base GPT trained on it for 4 steps, and the task files."""
    root = tmp_path_factory.mktemp("ft")
    rng = random.Random(0)
    src = root / "src"
    src.mkdir()
    for i in range(20):
        lines = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(20)]
        (src / f"f{i}.txt").write_text("\n".join(lines) + "\n狐狸 你好\n")
    assert main(["prepare", str(src), "--out", str(root / "data"), "--vocab-size", "300", "--val-fraction", "0.2",
                 "--quiet"]) == 0
    assert main(["train", *TINY, f"data.dir={root / 'data'}", f"train.out_dir={root / 'base'}", "--quiet"]) == 0
    _jsonl(root / "pairs.jsonl", PAIRS)
    _jsonl(root / "chat.jsonl", [{"messages": [{"role": "system", "content": "be brief"},
                                               {"role": "user", "content": p["prompt"]},
                                               {"role": "assistant", "content": p["response"]}]} for p in PAIRS])
    _jsonl(root / "labelled.jsonl", LABELLED)
    _jsonl(root / "docs.jsonl", [{"document": f"{p['prompt']} doc", "answer": p["response"]} for p in PAIRS])
    return root


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sft_full_run_dir_works_with_eval_generate_export_and_serve(ws, capsys, tmp_path):
    code, out, _ = _run(capsys, "finetune", "sft", ws / "base", "--data", ws / "pairs.jsonl", "--val",
                        ws / "pairs.jsonl", "--out", tmp_path / "sft", "--epochs", "2", "--batch-size", "4",
                        "--json", "--quiet")
    assert code == 0
    summary = json.loads(out)
    assert summary["examples"] == len(PAIRS) and summary["method"] == "full" and summary["val_loss"] > 0
    assert (tmp_path / "sft" / "latest").is_file() and (tmp_path / "sft" / "plots" / "loss.png").is_file()
    code, out, _ = _run(capsys, "eval", tmp_path / "sft", "--json", "--batches", "1", "--seq-len", "16")
    assert code == 0 and json.loads(out)["splits"]["val"]["loss"] > 0  # on the base's pretraining data
    code, out, _ = _run(capsys, "generate", tmp_path / "sft", "--prompt", "the", "--max-new-tokens", "4",
                        "--temperature", "0")
    assert code == 0 and out.startswith("the")
    code, out, _ = _run(capsys, "export", tmp_path / "sft", "--out", tmp_path / "sft.safetensors")
    assert code == 0 and (tmp_path / "sft.safetensors").is_file()
    from fastapi.testclient import TestClient

    from clusterlm.generate.loading import load_for_generation
    from clusterlm.serve.app import create_app

    loaded = load_for_generation(str(tmp_path / "sft"), "cpu")
    app = create_app(loaded.model, loaded.tokenizer, model_name="sft", eos_id=0, max_new_tokens_limit=8)
    with TestClient(app) as client:  # the context runs the app's lifespan (its decode loop)
        reply = client.post("/v1/chat/completions", json={"model": "sft", "max_tokens": 4, "temperature": 0,
                                                          "messages": [{"role": "user", "content": "translate fox"}]})
    assert reply.status_code == 200 and "content" in reply.json()["choices"][0]["message"]


def test_sft_lora_on_chat_records_then_eval_translate_and_eval_qa(ws, capsys, tmp_path):
    run = tmp_path / "lora"
    code, out, _ = _run(capsys, "finetune", "sft", ws / "base", "--data", ws / "chat.jsonl", "--out", run,
                        "--method", "lora", "--lora-rank", "2", "--max-steps", "3", "--batch-size", "4", "--json",
                        "--quiet", "--no-packing")
    assert code == 0
    summary = json.loads(out)
    assert summary["lora_merged"] == summary["lora_layers"] > 0 and summary["trainable_params"] < summary["total_params"]
    code, out, _ = _run(capsys, "eval-translate", run, "--data", ws / "pairs.jsonl", "--train", ws / "pairs.jsonl",
                        "--limit", "4", "--max-new-tokens", "4", "--predictions", tmp_path / "p.jsonl", "--json",
                        "--quiet")
    assert code == 0
    report = json.loads(out)
    assert report["examples"] == 4 and set(report["scores"]) == {"model", "identity", "translation_memory"}
    assert report["scores"]["translation_memory"]["chrf"] == pytest.approx(100.0)  # test = train here
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 4
    code, out, _ = _run(capsys, "eval-qa", run, "--data", ws / "pairs.jsonl", "--documents", ws / "docs.jsonl",
                        "--max-new-tokens", "4", "--quiet")
    assert code == 0 and "retrieval" in out and "EM" in out


def test_classify_train_predict_and_score(ws, capsys, tmp_path):
    run = tmp_path / "cls"
    code, out, _ = _run(capsys, "finetune", "classify", ws / "base", "--data", ws / "labelled.jsonl", "--val",
                        ws / "labelled.jsonl", "--out", run, "--method", "head", "--epochs", "3", "--quiet")
    assert code == 0 and "macro-F1" in out and (run / "plots" / "confusion.png").is_file()
    code, out, _ = _run(capsys, "classify", run, "the quick brown fox", "--json")
    result = json.loads(out)
    assert set(result["probabilities"]) == {"animal", "code"}
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    code, out, _ = _run(capsys, "classify", run, "--data", ws / "labelled.jsonl", "--train", ws / "labelled.jsonl",
                        "--json")
    assert code == 0 and set(json.loads(out)["scores"]) == {"model", "tfidf_logreg"}


def test_data_builders_from_a_source_root(ws, capsys, tmp_path):
    root = tmp_path / "lib"
    for pkg in ("aa", "bb", "cc", "dd", "ee", "ff", "gg", "hh", "ii", "jj"):
        for i in range(10):  # the CLI's defaults: packages of ≥ 10 modules, 10% of modules per held-out split
            (root / pkg).mkdir(parents=True, exist_ok=True)
            (root / pkg / f"m{i}.py").write_text(
                f'"""Module {i} of {pkg} holds the tools."""\n\n'
                f'def go_{i}():\n    """Go to the {pkg} place number {i}."""\n' + "    x = 1  # pad line\n" * 30)
    for task in ("qa", "classify"):
        code, out, _ = _run(capsys, "finetune", "data", task, root, "--out", tmp_path / task)
        assert code == 0 and (tmp_path / task / "test.jsonl").is_file()


def _bad_wordlevel_checkpoint(root: Path) -> Path:
    """A checkpoint whose tokenizer is word-level with [UNK]: it cannot write Chinese."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from clusterlm.model.build import build_model
    from clusterlm.config.model import ModelConfig
    from clusterlm.checkpoint.formats import save_model_dir

    vocab = {w: i for i, w in enumerate(["[UNK]", "<|endoftext|>", "<|pad|>", "<", "|", ">", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(root / "wl.json"))
    cfg = ModelConfig(n_layer=1, n_head=2, d_model=16, vocab_size=len(vocab), max_seq_len=32)
    save_model_dir(root / "wl", build_model(cfg), cfg, root / "wl.json", {"step": 0})
    return root / "wl"


def test_bad_input_is_one_line_exit_2_and_writes_nothing(ws, capsys, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    _jsonl(tmp_path / "nofield.jsonl", [{"prompt": "x"}])
    _jsonl(tmp_path / "long.jsonl", [{"prompt": "fox " * 200, "response": "dog"}])
    _jsonl(tmp_path / "unseen.jsonl", LABELLED[:2] + [{"text": "meow", "label": "cat"}])
    _jsonl(tmp_path / "nolabel.jsonl", [{"text": "meow"}])
    (tmp_path / "exists").mkdir()
    wordlevel = _bad_wordlevel_checkpoint(tmp_path)
    out = tmp_path / "out"
    sft = ["finetune", "sft", ws / "base", "--out", out, "--quiet"]
    cls = ["finetune", "classify", ws / "base", "--data", ws / "labelled.jsonl", "--out", out, "--quiet"]
    cases = [
        ([*sft, "--data", tmp_path / "missing.jsonl"], "does not exist"),
        ([*sft, "--data", tmp_path / "empty.jsonl"], "is empty"),
        ([*sft, "--data", tmp_path / "nofield.jsonl"], "field 'response' is missing"),
        ([*sft, "--data", tmp_path / "long.jsonl"], "longer than the model's context"),
        ([*sft, "--data", ws / "pairs.jsonl", "--context", "999"], "--context must be in"),
        ([*sft, "--data", ws / "pairs.jsonl", "--batch-size", "0"], "--batch-size must be in [1, "),
        (["finetune", "sft", wordlevel, "--data", ws / "pairs.jsonl", "--out", out], "cannot encode this text"),
        (["finetune", "sft", ws / "base", "--data", ws / "pairs.jsonl", "--out", tmp_path / "exists"], "exists"),
        ([*cls, "--val", tmp_path / "unseen.jsonl"], "label 'cat' does not occur in the training data"),
        ([*cls, "--val", tmp_path / "nolabel.jsonl"], "field 'label' is missing"),
        ([*cls, "--val", ws / "labelled.jsonl", "--class-weights", "cat=2"], "names no training label"),
        (["classify", ws / "base", "some text"], "without a classification head"),
        (["eval-translate", wordlevel, "--data", ws / "pairs.jsonl"], "cannot encode the reference"),
        (["eval-qa", ws / "base", "--data", tmp_path / "nofield.jsonl"], "field 'response' is missing"),
        (["eval-translate", ws / "base", "--data", ws / "pairs.jsonl", "--limit", "0"], "--limit must be ≥ 1"),
    ]
    for argv, message in cases:
        code, _, err = _run(capsys, *argv)
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
        assert not out.exists()
    assert list((tmp_path / "exists").iterdir()) == []
