"""`clusterlm prepare` end to end: exit codes, output, progress bar, atomicity under SIGKILL."""

from __future__ import annotations

import json
import os
import pty
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterlm.cli.main import main
from clusterlm.data.loader import Dataset

WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt".split()


def corpus(root: Path, n_docs: int = 12, words: int = 80, seed: int = 0) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        (root / f"d{i:04d}.txt").write_text(f"doc {i}: " + " ".join(rng.choices(WORDS, k=words)) + "\n")
    return root


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["prepare", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prepare_success_prints_summary(tmp_path, capsys):
    src = corpus(tmp_path / "in")
    code, out, err = run_cli(capsys, str(src), "--out", str(tmp_path / "ds"), "--vocab-size", "300",
                             "--val-fraction", "0.3", "--seed", "1")
    assert code == 0, err
    assert "documents: 12 in, 12 kept" in out and "bytes/token" in out
    assert err == ""  # stderr is not a terminal here: no progress bar
    ds = Dataset.open(tmp_path / "ds", verify_sha256=True)
    assert ds.manifest["seed"] == 1 and ds.vocab_size <= 300


def test_quiet_prints_nothing(tmp_path, capsys):
    src = corpus(tmp_path / "in")
    assert run_cli(capsys, str(src), "--out", str(tmp_path / "ds"), "--vocab-size", "300", "--quiet") == (0, "", "")


def test_config_file_and_dotted_overrides(tmp_path, capsys):
    src = corpus(tmp_path / "in")
    cfg = tmp_path / "run.yaml"
    out = tmp_path / "ds"
    cfg.write_text(f"data:\n  dir: {out}\n  vocab_size: 280\n  inputs: ['{src}']\n  clean:\n    min_chars: 10\n")
    code, _, err = run_cli(capsys, "--config", str(cfg), "data.clean.min_chars=1000", "data.shard_tokens=2048")
    assert code == 2 and "nothing left after cleaning" in err  # the override beat the file
    code, _, err = run_cli(capsys, "--config", str(cfg), "data.shard_tokens=2048")  # --out from data.dir
    assert code == 0, err
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["shard_tokens"] == 2048 and manifest["report"]["tokenizer"]["requested_vocab_size"] == 280


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{tmp}/missing", "--out", "{tmp}/ds"], "input path not found"),
        (["{tmp}/in", "--out", "{tmp}/ds", "--vocab-size", "100"], "vocab size 100 out of range"),
        (["{tmp}/in", "--out", "{tmp}/ds", "--vocab-size", "5000000"], "out of range"),
        (["{tmp}/in", "--out", "{tmp}/ds", "--min-chars", "100000"], "nothing left after cleaning"),
        (["{tmp}/in", "--out", "{tmp}/ds", "--val-fraction", "1.5"], "data.val_fraction"),
        (["{tmp}/in", "--out", "{tmp}/ds", "--tokenizer", "{tmp}/none.json"], "tokenizer file not found"),
        (["{tmp}/in", "--out", "{tmp}/exists"], "already exists"),
        (["{tmp}/in", "--out", "{tmp}/ds", "data.clean.nfd=true"], "unknown config key 'data.clean.nfd'"),
        (["{tmp}/in"], "--out"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    corpus(tmp_path / "in")
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "file").write_text("x")
    code, out, err = run_cli(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "ds").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "argv, message",
    [
        (["/dev/zero", "--out", "{tmp}/ds"], r"all dropped \(device 1\)"),
        (["{tmp}/pipe.txt", "--out", "{tmp}/ds"], r"all dropped \(fifo 1\)"),
        (["{tmp}/specials", "--out", "{tmp}/ds"], r"all dropped \(fifo 1\)"),
        (["{tmp}/in", "--out", "{tmp}/ds", "--config", "{tmp}/bomb.yaml"], "YAML aliases expand to more than"),
        (["{tmp}/in", "--out", "{tmp}/ds", "--config", "{tmp}/latin1.yaml"], "is not valid UTF-8"),
        (["{tmp}/in", "--out", "{tmp}/ds", "--max-file-mb", "0"], "data.max_file_mb"),
        (["{tmp}/in", "--out", "{tmp}/ds", "--max-line-mb", "-1"], "data.max_line_mb"),
    ],
)
def test_hostile_inputs_exit_2_with_one_line_and_never_hang(tmp_path, capsys, argv, message):
    corpus(tmp_path / "in")
    os.mkfifo(tmp_path / "pipe.txt")
    (tmp_path / "specials").mkdir()
    os.mkfifo(tmp_path / "specials" / "x.jsonl")
    (tmp_path / "bomb.yaml").write_text("".join(
        f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}" if i else "lol"] * 9) + "]\n" for i in range(9)))
    (tmp_path / "latin1.yaml").write_bytes(b"data:\n  seed: caf\xe9\n")
    code, out, err = run_cli(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(message, err), err
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.*"))


@pytest.mark.timeout(60)
def test_special_files_next_to_text_are_skipped_and_reported(tmp_path, capsys):
    src = corpus(tmp_path / "in")
    os.mkfifo(src / "pipe.txt")
    (src / "loop").symlink_to(src)
    code, out, err = run_cli(capsys, str(src), "--out", str(tmp_path / "ds"), "--vocab-size", "300")
    assert code == 0, err
    assert "dropped: fifo 1" in out and "symlinked_dir (1 not walked)" in out
    report = json.loads((tmp_path / "ds" / "report.json").read_text())
    assert report["documents"]["dropped"] == {"fifo": 1} and report["files"]["skipped"] == {"symlinked_dir": 1}


def test_progress_bar_on_a_terminal(tmp_path):
    src = corpus(tmp_path / "in", n_docs=30)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "clusterlm", "prepare", str(src), "--out", str(tmp_path / "ds"), "--vocab-size", "300"],
        stdout=subprocess.PIPE, stderr=slave, env={**os.environ, "COLUMNS": "120"},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    bar = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "encode" in bar and "B/s" in bar and "docs=" in bar
    assert b"prepared" in out


def test_killed_prepare_leaves_nothing_complete_and_rerun_succeeds(tmp_path):
    # Big enough that encoding takes a few seconds; a reused tokenizer skips training.
    src = tmp_path / "in"
    src.mkdir()
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    for i in range(28):
        (src / f"d{i:03d}.txt").write_text(" ".join(rng.choices(vocab, k=40_000)))
    tok_ds = tmp_path / "tokds"
    assert main(["prepare", str(src / "d000.txt"), "--out", str(tok_ds), "--vocab-size", "300", "--quiet"]) == 0
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "clusterlm", "prepare", str(src), "--out", str(out), "--quiet",
           "--tokenizer", str(tok_ds / "tokenizer.json"), "--shard-tokens", "4096"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if list(tmp_path.glob(".ds.*.tmp/shards/train-00001.bin")):
                break  # mid-encode: shards are being written
            time.sleep(0.02)
        assert proc.poll() is None, "prepare finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    temps = list(tmp_path.glob(".ds.*.tmp"))
    assert temps and not list(tmp_path.glob(".ds.*.tmp/manifest.json"))
    from clusterlm.errors import DataError

    with pytest.raises(DataError, match="incomplete"):
        Dataset.open(temps[0])

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    Dataset.open(out, verify_sha256=True)
    assert not list(tmp_path.glob(".ds.*.tmp"))  # the dead run's temp dir was cleaned up
