"""The embedded default corpus end to end (slow: the whole stdlib, ~11 MB)."""

from __future__ import annotations

import numpy as np
import pytest

from clusterlm.config.data import DataConfig
from clusterlm.data.corpus import default_corpus_files
from clusterlm.data.loader import Dataset, TokenLoader
from clusterlm.data.prepare import prepare_dataset
from clusterlm.data.tokenizer import load_tokenizer


def test_default_corpus_excludes_tests_and_third_party():
    paths = [f.path.as_posix() for f in default_corpus_files()]
    assert len(paths) > 300
    for bad in ("/site-packages/", "/test/", "/idlelib/", "/turtledemo/", "/__pycache__/"):
        assert not any(bad in p for p in paths), bad
    assert any(p.endswith("/json/decoder.py") for p in paths)


def test_prepare_whole_default_corpus(tmp_path):
    report = prepare_dataset(DataConfig(workers=2), tmp_path / "ds")
    ds = Dataset.open(tmp_path / "ds", verify_sha256=True)
    assert report["documents"]["kept"] > 300 and ds.vocab_size == 8192
    assert 3.0 < ds.bytes_per_token("train") < 5.0  # code compresses to ~3.8 bytes/token at 8k vocab
    # Documents come back exactly: decode the first few of train and find them in the corpus.
    tok = load_tokenizer(ds.tokenizer_path)
    ids = np.asarray(ds.tokens("train")[:200_000]).tolist()
    ends = [i for i, t in enumerate(ids) if t == ds.eos_id][:5]
    corpus = {f.path.read_text(encoding="utf-8") for f in default_corpus_files()}
    start = 0
    for end in ends:
        assert tok.decode(ids[start:end], skip_special_tokens=False) in corpus
        start = end + 1
    x, y = next(TokenLoader(ds, "train", 4, 256))
    assert x.shape == (4, 256)
