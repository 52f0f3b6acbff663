from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterlm.config.data import CleanConfig
from clusterlm.data.encode import BatchProcessor, EncodeSpec, split_for_encoding, splits_safely
from clusterlm.data.readers import RawDoc
from clusterlm.data.tokenizer import train_tokenizer

TRAIN = ["it's a test, isn't it? x1 = f(y2) + 3.5 # done\n\n    return 'ok'\n" * 5, "大规模语言模型 😀 café\n" * 5]


@pytest.fixture(scope="module")
def tok():
    t = train_tokenizer(TRAIN, vocab_size=400, min_frequency=1)
    t.encode_special_tokens = True
    return t


PIECES = ["it", "'s", "'", "s", " ", "  ", "\n", "\n\n", "\t", "x", "1", "23", "(", ")", ".", ",", "abc", "大规模",
          "😀", "é", "e\u0301", "\u3000", "\x1c", "\u00a0", "return", "'ok'", "#", "_", "-", "Ω"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=120), st.integers(min_value=2, max_value=40))
def test_split_pieces_encode_exactly_like_the_whole(tok, parts, max_chars):
    text = "".join(parts)
    pieces = split_for_encoding(text, max_chars)
    assert "".join(pieces) == text
    whole = tok.encode(text).ids
    assert [i for p in pieces for i in tok.encode(p).ids] == whole


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300), st.integers(2, 50))
def test_split_any_unicode_encodes_like_the_whole(tok, text, max_chars):
    pieces = split_for_encoding(text, max_chars)
    assert [i for p in pieces for i in tok.encode(p).ids] == tok.encode(text).ids


def test_long_document_is_cut_near_the_limit():
    text = "word, " * 10_000
    pieces = split_for_encoding(text, 1000)
    assert len(pieces) > 50 and max(map(len, pieces)) <= 1000 and "".join(pieces) == text


def test_batch_encoding_matches_whole_documents(tok, monkeypatch):
    import clusterlm.data.encode as encode

    monkeypatch.setattr(encode, "ENCODE_CHARS", 64)  # force many slices and cuts
    docs = [TRAIN[0] * 3, "short doc that is kept, long enough", TRAIN[1] * 4]
    spec = EncodeSpec(clean=CleanConfig(), tokenizer_json=tok.to_str(), token_dtype="<u2")
    result = BatchProcessor(spec)([RawDoc(f"d{i}", "text", d.encode()) for i, d in enumerate(docs)])
    expected = [tok.encode(d).ids for d in docs]
    assert result.lengths.tolist() == [len(e) for e in expected]
    assert np.array_equal(result.tokens, np.concatenate([np.array(e) for e in expected]))


def test_only_our_byte_level_setup_is_split(tok):
    spec = json.loads(tok.to_str())
    assert splits_safely(spec)
    assert not splits_safely({**spec, "normalizer": {"type": "NFC"}})
    assert not splits_safely({**spec, "pre_tokenizer": {"type": "Whitespace"}})
    newline_token = {"content": "a\nb", "special": False}
    assert not splits_safely({**spec, "added_tokens": spec["added_tokens"] + [newline_token]})
