"""Helpers of the fuzz suite: run a verb in this process, assert the one-line error, hash outputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from clusterlm.cli.main import main

TINY = ["model.preset=tiny", "model.n_layer=1", "model.d_model=32", "model.n_head=2", "train.seq_len=16",
        "train.micro_batch=2", "train.max_steps=4", "train.warmup_steps=1", "train.eval_every=2",
        "train.eval_batches=1", "train.ckpt_every=2", "train.precision=fp32", "train.tensorboard=false",
        "train.plots=false"]


def run_cli(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capfd.readouterr()
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def assert_one_error(code: int, err: str, *words: str) -> None:
    """Exactly one line, `error: …`, exit 2, no traceback; the line holds each of `words`."""
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    for word in words:
        assert word in err, (word, err)


def tree_sha256(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` (or of `path` itself): what a failed verb must leave unchanged."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
