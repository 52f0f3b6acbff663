"""`clusterlm train` and `clusterlm eval` end to end, including every bad-input class (exit 2, one line)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from clusterlm.cli.main import main

TINY = ["model.preset=tiny", "model.n_layer=1", "model.d_model=32", "model.n_head=2", "train.seq_len=16",
        "train.micro_batch=2", "train.max_steps=6", "train.warmup_steps=1", "train.eval_every=3",
        "train.eval_batches=2", "train.ckpt_every=3", "train.precision=fp32", "train.tensorboard=false",
        "train.plots=false"]


def _corpus(root: Path, seed: int) -> Path:
    rng = random.Random(seed)
    words = "for in range def return yield class self none true lambda print".split()
    root.mkdir(parents=True)
    for i in range(30):
        text = "\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(30))
        (root / f"f{i}.py").write_text(f"# file {i}\n{text}\n")
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Two datasets with different tokenizers, a GPT run and an LSTM run on the first."""
    root = tmp_path_factory.mktemp("cli")
    for name, seed, vocab in (("data", 0, 300), ("other", 1, 280)):
        assert main(["prepare", str(_corpus(root / f"{name}-src", seed)), "--out", str(root / name),
                     "--vocab-size", str(vocab), "--val-fraction", "0.2", "--quiet"]) == 0
    data = root / "data"
    assert main(["train", *TINY, f"data.dir={data}", f"train.out_dir={root / 'gpt'}", "--quiet"]) == 0
    assert main(["train", *TINY, "model.preset=tiny-lstm", f"data.dir={data}", f"train.out_dir={root / 'lstm'}",
                 "--quiet"]) == 0
    return root


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_train_summary_and_eval_json(workspace, capsys):
    code, out, _ = _run(capsys, "eval", str(workspace / "gpt"), "--json", "--batches", "0")
    assert code == 0
    report = json.loads(out)
    assert report["step"] == 6 and report["checkpoint"].endswith("step-0000006")
    for split in ("train", "val"):
        m = report["splits"][split]
        assert set(m) >= {"loss", "perplexity", "bits_per_byte", "top1_accuracy", "top5_accuracy", "tokens"}
        assert 0 <= m["top1_accuracy"] <= m["top5_accuracy"] <= 1
        assert m["perplexity"] == pytest.approx(2.718281828 ** m["loss"], rel=1e-6)
    assert report["generalization_gap"] == pytest.approx(report["splits"]["val"]["loss"]
                                                         - report["splits"]["train"]["loss"])
    # --batches 0 covers the whole val split: every window but the trailing partial one
    meta_tokens = json.loads((workspace / "data" / "manifest.json").read_text())["splits"]["val"]["tokens"]
    assert report["splits"]["val"]["tokens"] == (meta_tokens - 1) // 16 * 16


def test_eval_compares_transformer_and_lstm_on_the_same_windows(workspace, capsys):
    code, out, _ = _run(capsys, "eval", str(workspace / "gpt"), str(workspace / "lstm"), "--split", "val", "--json",
                          "--batches", "10")
    assert code == 0
    gpt, lstm = json.loads(out)
    assert (gpt["model"]["style"], lstm["model"]["style"]) == ("gpt2", "lstm")
    assert gpt["splits"]["val"]["tokens"] == lstm["splits"]["val"]["tokens"]
    code, out, _ = _run(capsys, "eval", str(workspace / "gpt"), str(workspace / "lstm"), "--batches", "5")
    assert code == 0 and "lstm" in out and "gap (val − train loss)" in out


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.dir={root}/missing"], "error: "),
        (["data.dir={root}/incomplete"], "manifest"),
        (["model.preset=gpt2-tiny"], "did you mean"),
        (["train.seq_len=128"], "exceeds the model's context"),
        (["train.micro_batch=0"], "train.micro_batch"),
        (["train.batch_size=5"], "multiple of micro_batch"),
        (["train.batch_size=8", "train.grad_accum=3"], "contradicts"),
        (["train.warmup_steps=50"], "warmup_steps"),
        (["model.d_model=64"], "different model config"),
        (["train.init_from={root}/lstm", "train.out_dir={root}/fresh"], "different model config"),
    ],
)
def test_bad_training_input_is_one_line_exit_2_and_overwrites_nothing(workspace, capsys, overrides, message):
    (workspace / "incomplete").mkdir(exist_ok=True)  # a dataset dir without manifest.json
    before = _tree(workspace / "gpt")
    argv = [*TINY, f"data.dir={workspace / 'data'}", f"train.out_dir={workspace / 'gpt'}"]
    argv += [o.format(root=workspace) for o in overrides]
    code, _, err = _run(capsys, "train", *argv, "--quiet")
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert _tree(workspace / "gpt") == before
    assert not (workspace / "fresh").exists()


def test_no_resume_refuses_existing_checkpoints(workspace, capsys):
    code, _, err = _run(capsys, "train", *TINY, f"data.dir={workspace / 'data'}",
                        f"train.out_dir={workspace / 'gpt'}", "--no-resume")
    assert code == 2 and "already holds checkpoints" in err
    code, _, err = _run(capsys, "train", *TINY, f"data.dir={workspace / 'data'}",
                        f"train.out_dir={workspace / 'nothing'}", "--resume")
    assert code == 2 and "nothing to resume" in err


def test_bad_eval_input(workspace, capsys, tmp_path):
    # checkpoint scored on a dataset made with another tokenizer
    code, _, err = _run(capsys, "eval", str(workspace / "gpt"), "--data", str(workspace / "other"))
    assert code == 2 and "different tokenizer" in err
    # corrupted weights: flip bytes in a copy of the checkpoint
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(workspace / "gpt" / "checkpoints" / "step-0000006", ckpt)
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-20:] = b"\xff" * 20
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    code, _, err = _run(capsys, "eval", str(ckpt))
    assert code == 2 and "corrupted" in err and err.count("\n") == 1
    (ckpt / "model.safetensors").write_bytes(b"not safetensors")
    (ckpt / "meta.json").write_text(json.dumps({**json.loads((ckpt / "meta.json").read_text()),
                                                "weights_sha256": None}))
    code, _, err = _run(capsys, "eval", str(ckpt))
    assert code == 2 and "corrupted" in err
    code, _, err = _run(capsys, "eval", str(workspace / "gpt"), "--seq-len", "999")
    assert code == 2 and "exceeds the model's context" in err
    code, _, err = _run(capsys, "eval", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err


def test_cli_process_exit_code_and_single_error_line(workspace):
    """The real console script: exit status 2 and no traceback."""
    proc = subprocess.run([sys.executable, "-m", "clusterlm", "train", *TINY, f"data.dir={workspace}/missing"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_sigterm_stops_after_the_step_with_a_checkpoint(workspace, tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    argv = [*TINY, f"data.dir={workspace / 'data'}", f"train.out_dir={out}", "train.max_steps=1000000",
            "train.ckpt_every=1000000", "train.eval_every=1000000", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "clusterlm", "train", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists():  # created when the loop starts
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    step = int((out / "latest").read_text().strip().split("-")[1])
    assert step >= 1 and f"interrupted at step {step}" in stdout + stderr
