"""Tiny synthetic corpora and one shared prepared dataset for the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterlm.config.data import DataConfig
from clusterlm.data.prepare import prepare_dataset
from datahelp import write_corpus


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared dataset (vocab 300, small shards so splits span several files), shared read-only."""
    root = tmp_path_factory.mktemp("ds")
    corpus = write_corpus(root / "corpus", n_docs=60, n_words=200)
    out = root / "dataset"
    cfg = DataConfig(inputs=[str(corpus)], vocab_size=300, val_fraction=0.25, shard_tokens=1024)
    prepare_dataset(cfg, out)
    return out
