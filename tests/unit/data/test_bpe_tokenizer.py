from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterlm.config.data import DataConfig
from clusterlm.data.tokenizer import (
    EOS_TOKEN,
    MIN_VOCAB_SIZE,
    PAD_TOKEN,
    ensure_special_tokens,
    load_tokenizer,
    special_ids,
    train_tokenizer,
)
from clusterlm.errors import DataError

TRAIN_TEXT = [
    "def add(a, b):\n    return a + b\n\n",
    "the quick brown fox jumps over the lazy dog\n" * 3,
    "class Model:\n\tdef forward(self, x):\n\t\treturn x\n",
]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TRAIN_TEXT * 5, vocab_size=320, min_frequency=1)


def roundtrip(tok, text: str) -> str:
    return tok.decode(tok.encode(text).ids, skip_special_tokens=False)


def test_special_tokens_have_ids_0_and_1(tok):
    assert special_ids(tok) == (0, 1)
    assert tok.token_to_id(EOS_TOKEN) == 0 and tok.token_to_id(PAD_TOKEN) == 1


def test_training_learns_merges(tok):
    assert tok.get_vocab_size() > MIN_VOCAB_SIZE
    # A frequent word becomes fewer tokens than its bytes.
    assert len(tok.encode("return").ids) < len("return")


@pytest.mark.parametrize(
    "text",
    [
        "大规模语言模型从理论到实践",
        "emoji 😀🚀 and a family 👩\u200d👩\u200d👧",
        "tabs\t\tand    runs of     spaces   ",
        "  leading spaces and trailing newline\n\n",
        "mixed: naïve café — «quotes» … 🙂\r\n",
        "",
        " ",
        "\x00\x01 control bytes \x7f",
        f"{EOS_TOKEN} literal special {PAD_TOKEN}",
    ],
)
def test_roundtrip_examples(tok, text):
    assert roundtrip(tok, text) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=200))
def test_roundtrip_any_unicode(tok, text):
    assert roundtrip(tok, text) == text


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["大规模", "语言模型", "😀", "\t", "  ", "    ", "\n", "x", "def", "é"]), max_size=50))
def test_roundtrip_tricky_pieces(tok, pieces):
    text = "".join(pieces)
    assert roundtrip(tok, text) == text


def test_unseen_characters_still_encode(tok):
    # Trained on ASCII only, yet every byte is in the alphabet: no unknown token.
    ids = tok.encode("火").ids
    assert len(ids) == 3  # three UTF-8 bytes


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="invalid tokenizer"):
        load_tokenizer(bad)


def test_load_roundtrips_saved_tokenizer(tok, tmp_path):
    tok.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path)  # a directory holding tokenizer.json works too
    assert loaded.encode("def add").ids == tok.encode("def add").ids


def test_ensure_special_tokens_adds_missing():
    from tokenizers import Tokenizer, models

    bare = Tokenizer(models.BPE())
    ensure_special_tokens(bare)
    eos, pad = special_ids(bare)
    assert eos != pad


@pytest.mark.parametrize("size", [MIN_VOCAB_SIZE - 1, 2_000_000])
def test_vocab_size_out_of_range(size):
    with pytest.raises(DataError, match="out of range"):
        train_tokenizer(["x"], vocab_size=size)


def test_config_vocab_bounds_match_tokenizer_bounds():
    from clusterlm.data.tokenizer import MAX_VOCAB_SIZE

    meta = {type(m).__name__: m for m in DataConfig.model_fields["vocab_size"].metadata}
    assert meta["Ge"].ge == MIN_VOCAB_SIZE and meta["Le"].le == MAX_VOCAB_SIZE
