"""BPE training: linear in giant "words", single-threaded in a child, identical results."""

from __future__ import annotations

import time
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterlm.data.bpe_process import train_tokenizer_in_subprocess
from clusterlm.data.tokenizer import MAX_PIECE_CHARS, new_bpe_tokenizer, piece_cap_pre_tokenizer, train_tokenizer
from clusterlm.errors import DataError

TEXTS = ["def add(a, b):\n    return a + b\n", "the quick brown fox jumps over the lazy dog\n" * 3, "大规模语言模型 😀\n"] * 5


def giant_word(n_chars: int, seed: int = 0) -> str:
    """`n_chars` random lowercase letters: one "word" to GPT-2's pre-tokenizer."""
    return np.random.default_rng(seed).integers(ord("a"), ord("z") + 1, n_chars, dtype=np.uint8).tobytes().decode()


def train_cpu_s(text: str) -> float:
    start = time.process_time()
    train_tokenizer([text], vocab_size=300)
    return time.process_time() - start


@pytest.mark.timeout(180)
def test_single_giant_word_trains_in_linear_time():
    # Uncut, one 1 MB word did not finish in 120 s even at this vocab (every merge moves the
    # rest of the word); cut into MAX_PIECE_CHARS pieces it takes about half a second on a
    # 2-core machine, and 4x the text takes about 4x the time.
    one_mb = train_cpu_s(giant_word(1_000_000))
    four_mb = train_cpu_s(giant_word(4_000_000, seed=1))
    assert one_mb < 60 and four_mb < 120
    assert four_mb / one_mb < 8, (one_mb, four_mb)


def longest_run(text: str) -> int:
    """Longest run of one GPT-2 character class (letter, number, other, whitespace)."""
    def cls(c: str) -> str:
        return "s" if c.isspace() else unicodedata.category(c)[0] if unicodedata.category(c)[0] in "LN" else "o"

    best = run = 0
    for i, c in enumerate(text):
        run = run + 1 if i and cls(c) == cls(text[i - 1]) else 1
        best = max(best, run)
    return best


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab1 \n\t.,é大😀'"), max_size=300), st.integers(2, 8))
def test_piece_cap_only_cuts_long_runs(text, cap):
    plain = new_bpe_tokenizer().pre_tokenizer.pre_tokenize_str(text)
    capped = piece_cap_pre_tokenizer(cap).pre_tokenize_str(text)
    assert "".join(p for p, _ in capped) == "".join(p for p, _ in plain)
    if longest_run(text) < cap:
        assert capped == plain  # ordinary text: exactly GPT-2's byte-level pre-split
    assert all(end - start <= cap for _, (start, end) in capped)


def test_saved_tokenizer_keeps_the_plain_byte_level_pre_split():
    tok = train_tokenizer(TEXTS + [giant_word(10 * MAX_PIECE_CHARS)], vocab_size=400, min_frequency=1)
    assert tok.pre_tokenizer.__class__.__name__ == "ByteLevel"
    word = giant_word(3 * MAX_PIECE_CHARS, seed=2)
    assert tok.decode(tok.encode(word).ids) == word


@pytest.mark.timeout(60)
def test_subprocess_training_equals_in_process_training():
    child = train_tokenizer_in_subprocess(iter(TEXTS), vocab_size=400, min_frequency=1)
    assert child.to_str() == train_tokenizer(TEXTS, vocab_size=400, min_frequency=1).to_str()


@pytest.mark.timeout(60)
def test_subprocess_failure_is_a_data_error():
    with pytest.raises(DataError, match="tokenizer training failed.*vocab size 5 out of range"):
        train_tokenizer_in_subprocess(iter(TEXTS), vocab_size=5)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_megabyte_word_at_the_default_vocab_takes_seconds():
    start = time.process_time()
    train_tokenizer([giant_word(1_000_000)], vocab_size=8192)
    assert time.process_time() - start < 60  # uncut: over 4 minutes
