"""Classic compressors as a yardstick: bits per byte of gzip -9 and xz -9e on held-out text.

A language model's bits per byte is a compression rate (arithmetic coding turns
−log₂ p into bits), so the fair baseline is a general-purpose compressor run on
exactly the same bytes. We decode the split's tokens back to text (the tokenizer
round-trips exactly), drop the EOS separators, and compress that.
"""

from __future__ import annotations

import gzip
import lzma
from typing import Any

import numpy as np

from clusterlm.data.tokenizer import load_tokenizer


def compressed_bits_per_byte(data: bytes) -> dict[str, float]:
    """{"gzip -9": bpb, "xz -9e": bpb} for `data` (8 · compressed size / original size)."""
    if not data:
        raise ValueError("cannot compress empty data")
    n = len(data)
    return {
        "gzip -9": 8.0 * len(gzip.compress(data, compresslevel=9, mtime=0)) / n,
        "xz -9e": 8.0 * len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) / n,
    }


def split_text(dataset: Any, split: str, max_tokens: int | None = None) -> bytes:
    """The UTF-8 text of a split (documents concatenated, separators dropped)."""
    tokenizer = load_tokenizer(dataset.tokenizer_path)
    ids = np.asarray(dataset.tokens(split)[: max_tokens] if max_tokens else dataset.tokens(split))
    ids = ids.astype(np.int64)
    ends = np.flatnonzero(ids == dataset.eos_id)
    out = []
    start = 0
    for end in list(ends) + [len(ids)]:
        if end > start:
            out.append(tokenizer.decode(ids[start:end].tolist(), skip_special_tokens=False))
        start = end + 1
    return "".join(out).encode("utf-8")
