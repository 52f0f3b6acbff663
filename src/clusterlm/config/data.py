"""`data:` section — how `clusterlm prepare` builds a dataset dir, and which dir training reads."""

from __future__ import annotations

from pydantic import Field

from clusterlm.config.base import Section


class CleanConfig(Section):
    """Cleaning steps, each on by default and counted in the prepare report."""

    html: bool = True  # HTML → visible text (scripts/styles dropped, blocks → newlines)
    nfc: bool = True  # Unicode NFC normalisation
    control_chars: bool = True  # drop control characters except \n and \t
    newlines: bool = True  # \r\n and \r → \n
    dedup: bool = True  # drop exact duplicate documents (content hash)
    min_chars: int = Field(default=32, ge=0)  # drop documents shorter than this after cleaning


class DataConfig(Section):
    # Dataset directory: written by `prepare`, read by `train` / `eval`.
    dir: str | None = None
    # Inputs for `prepare`: files, directories, globs. Empty = the embedded default corpus.
    inputs: list[str] = Field(default_factory=list)
    jsonl_field: str = "text"  # JSONL text field; dotted for nested objects (`meta.body`)
    # 256 byte symbols + <|endoftext|> + <|pad|> is the smallest byte-level BPE.
    vocab_size: int = Field(default=8192, ge=258, le=1_000_000)
    tokenizer: str | None = None  # reuse an existing tokenizer.json instead of training one
    # Train the tokenizer on a hash-sampled subset of about this many MB (None = everything).
    # BPE training memory grows with its input; the cap keeps it bounded on large corpora.
    tokenizer_sample_mb: float | None = Field(default=256, gt=0)
    # While training the tokenizer, runs of one character class (letters, digits, symbols,
    # whitespace) longer than this are cut into pieces of this length: training time stays
    # linear in a giant "word" (a long line without spaces) instead of quadratic.
    tokenizer_max_piece_chars: int = Field(default=256, ge=2)
    # Stop reading input after this many MB (decompressed); None = all of it.
    max_input_mb: float | None = Field(default=None, gt=0)
    # Read at most this many MB (decompressed) of any one file; the rest is skipped and
    # counted (`file_truncated`). Bounds endless or bomb-like inputs; None = no cap.
    max_file_mb: float | None = Field(default=16_000, gt=0)
    # A JSONL line (one record) longer than this many MB is skipped and counted
    # (`line_too_long`) without being held in memory whole; None = no cap.
    max_line_mb: float | None = Field(default=16, gt=0)
    val_fraction: float = Field(default=0.02, ge=0.0, lt=1.0)
    seed: int = 0
    # Encoding processes; 1 encodes in this process (the tokenizer still uses all cores).
    workers: int = Field(default=1, ge=1)
    shard_tokens: int = Field(default=1 << 24, ge=1024)  # tokens per shard file
    clean: CleanConfig = Field(default_factory=CleanConfig)
