"""Byte-level BPE tokenizer: train one with HF `tokenizers`, or load a `tokenizer.json`.

Byte-level means every string is first mapped to bytes (UTF-8) and each byte to
one of 256 base symbols, so there is no unknown token and
`decode(encode(x)) == x` for every valid Unicode string — Chinese, emoji, tabs,
runs of spaces. We deliberately use *no* normalizer and no prefix space: both
would make the round trip lossy (cleaning is the data pipeline's job, not the
tokenizer's).

Special tokens: `<|endoftext|>` separates documents in the shards (EOS);
`<|pad|>` pads ragged batches. Trained tokenizers give them ids 0 and 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from clusterlm.errors import DataError

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)
# 256 byte symbols + the two special tokens: below this BPE cannot even hold its alphabet.
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
# Token ids are stored as uint32 at most; far beyond any practical BPE vocabulary.
MAX_VOCAB_SIZE = 1_000_000


# While training, a run of one character class (letters, digits, other symbols, whitespace)
# longer than this is cut into pieces of this many characters. BPE training touches every
# occurrence of a merged pair, so one giant "word" (a 1 MB line with no spaces) costs
# time quadratic in its length; cut, it is linear. Real words are far shorter.
MAX_PIECE_CHARS = 256


def new_bpe_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE pipeline (no normalizer, no prefix space)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _byte_level()
    tok.decoder = decoders.ByteLevel()
    return tok


def _byte_level() -> pre_tokenizers.PreTokenizer:
    # use_regex: GPT-2's pre-split (words, numbers, punctuation, whitespace runs) so merges
    # never cross word boundaries; `\s+(?!\S)` keeps runs of spaces (code indentation) whole.
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def piece_cap_pre_tokenizer(max_piece_chars: int = MAX_PIECE_CHARS) -> pre_tokenizers.PreTokenizer:
    """GPT-2's byte-level pre-split after cutting same-class runs into `max_piece_chars` pieces.

    The classes are those of GPT-2's regex, and pieces start where a run starts, so text
    whose runs are all shorter is pre-tokenized exactly as by `ByteLevel` alone.
    """
    n = int(max_piece_chars)
    runs = "|".join(f"{cls}{{{n}}}" for cls in (r"\p{L}", r"\p{N}", r"[^\s\p{L}\p{N}]", r"\s"))
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(runs), behavior="isolated"), _byte_level()])


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    show_progress: bool = False,
    max_piece_chars: int = MAX_PIECE_CHARS,
) -> Tokenizer:
    """Train a byte-level BPE on `texts` (streamed; any iterable of documents), in this process.

    The result may hold fewer than `vocab_size` tokens when the text has fewer
    distinct merges to offer; read the real size with `tok.get_vocab_size()`.
    Threads: as `tokenizers` decides for this process (`TOKENIZERS_PARALLELISM`);
    `bpe_process.train_tokenizer_in_subprocess` trains on one thread in a child process.
    """
    check_vocab_size(vocab_size)
    tok = new_bpe_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        # All 256 byte symbols up front: any byte sequence stays encodable even if the
        # training text never contained it (e.g. a CJK corpus seen only at encode time).
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    # Giant runs are cut for training only. The saved tokenizer keeps the plain byte-level
    # pre-split: the extra regex pass would cost every encode (+15% to +50% CPU on stdlib
    # sources in a quick measurement), and encoding a giant word is already fast (1 MB of
    # letters: 0.7 s); only training on one is not. Runs shorter than the cap are pre-tokenized identically either way.
    tok.pre_tokenizer = piece_cap_pre_tokenizer(max_piece_chars)
    # One document per item: the Rust side prefetches 256 items, so items must stay small.
    tok.train_from_iterator(iter(texts), trainer=trainer)
    tok.pre_tokenizer = _byte_level()
    return tok


def check_vocab_size(vocab_size: int) -> None:
    if not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise DataError(
            f"vocab size {vocab_size} out of range: a byte-level BPE needs between "
            f"{MIN_VOCAB_SIZE} and {MAX_VOCAB_SIZE:,} tokens"
        )


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a `tokenizer.json`; DataError if it is missing or not a valid tokenizer."""
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise DataError(f"tokenizer file not found: {p}")
    try:
        return Tokenizer.from_file(str(p))
    except Exception as exc:  # noqa: BLE001 - the Rust error types are not importable
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"invalid tokenizer file {p}: {first}") from None


def ensure_special_tokens(tok: Tokenizer) -> Tokenizer:
    """Add `<|endoftext|>` / `<|pad|>` to a reused tokenizer that lacks them (in place)."""
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        tok.add_special_tokens(missing)
    return tok


def special_ids(tok: Tokenizer) -> tuple[int, int]:
    """(eos_id, pad_id) of a tokenizer that has both special tokens."""
    eos, pad = tok.token_to_id(EOS_TOKEN), tok.token_to_id(PAD_TOKEN)
    if eos is None or pad is None:
        raise DataError(f"tokenizer lacks the special tokens {EOS_TOKEN} / {PAD_TOKEN}")
    return eos, pad

