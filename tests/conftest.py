"""Shared test fixtures."""

from __future__ import annotations

import os

import pytest

# Deterministic, quiet, and never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOKENIZER_TEXT = ["the quick brown fox jumps over the lazy dog. " * 4, "hello world, hello model. " * 4,
                  "def f(x):\n    return x + 1\n" * 3]


@pytest.fixture(scope="session")
def tokenizer():
    """A tiny byte-level BPE trained on ASCII only, so non-ASCII text splits into byte tokens."""
    from clusterlm.data.tokenizer import train_tokenizer

    return train_tokenizer(TOKENIZER_TEXT, vocab_size=300, min_frequency=1)


@pytest.fixture
def one_thread():
    """Batch-1 decoding of tiny models is dominated by thread wake-ups when the two CI cores are
    shared with other tests; one intra-op thread makes these tests ~10× faster (results are the same).
    Directories of such tests request it from an autouse fixture in their conftest."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
