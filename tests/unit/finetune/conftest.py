"""A tiny pretrained-looking checkpoint (random weights, real tokenizer) for the fine-tuning tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterlm.model.build import build_model
from clusterlm.config.model import ModelConfig
from clusterlm.checkpoint.formats import save_model_dir


@pytest.fixture(autouse=True)
def _single_threaded(one_thread):
    """Tiny models: one intra-op thread is faster on shared CI cores (see tests/conftest.py)."""
    yield


def save_tiny(root: Path, tokenizer, style: str = "gpt2") -> Path:
    """A 2-layer, width-32 model of `style` with `tokenizer`, saved as a checkpoint dir."""
    root.mkdir(parents=True, exist_ok=True)
    tok_path = root / "tokenizer.src.json"
    tokenizer.save(str(tok_path))
    cfg = ModelConfig(style=style, n_layer=2, n_head=2, d_model=32, vocab_size=tokenizer.get_vocab_size(),
                      max_seq_len=64)
    ckpt = root / "ckpt"
    save_model_dir(ckpt, build_model(cfg), cfg, tok_path, {"step": 0})
    return ckpt


@pytest.fixture(scope="session")
def base_ckpt(tmp_path_factory, tokenizer) -> Path:
    return save_tiny(tmp_path_factory.mktemp("base"), tokenizer)
