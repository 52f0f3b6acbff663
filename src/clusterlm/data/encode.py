"""Decode, clean, hash and encode batches of raw documents — in worker processes.

The parent reads files and cuts them into batches of raw documents (about 1 MB);
`BatchProcessor` turns one batch into cleaned-document hashes plus token ids.
`ordered_map` runs batches on a pool of `workers` processes, keeps at most a few
batches in flight (so memory is bounded by the batch size, not the corpus) and
returns results in input order (so the output does not depend on `workers`).

Deduplication and the train/val split need a global view, so they happen in the
parent on the ordered results (see `prepare.py`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing as mp
import os
import sys
import unicodedata
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clusterlm.config.data import CleanConfig
from clusterlm.data.clean import Cleaner, MalformedHTML
from clusterlm.data.inputs import Drop
from clusterlm.data.readers import RawDoc


# Characters per tokenizer call within a batch (bounds the tokenizer's per-token objects).
ENCODE_CHARS = 128 * 1024


@dataclass(frozen=True)
class EncodeSpec:
    """Everything a worker needs; picklable (the tokenizer travels as its JSON)."""

    clean: CleanConfig
    jsonl_field: str = "text"
    tokenizer_json: str | None = None  # None: return cleaned texts instead of tokens
    token_dtype: str = "uint32"
    sample_fraction: float = 1.0  # text mode: return only documents whose hash falls below this


@dataclass
class BatchResult:
    """One batch, processed. `sources[i]`, `keys[i]`, `nbytes[i]`, `lengths[i]` describe kept document i."""

    raw_bytes: int = 0
    docs_in: int = 0
    drops: list[Drop] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # path (path:line for JSONL)
    keys: list[bytes] = field(default_factory=list)  # 16-byte blake2b of the cleaned UTF-8 text
    nbytes: list[int] = field(default_factory=list)  # cleaned UTF-8 bytes
    tokens: np.ndarray | None = None  # all documents' ids, concatenated (no separators)
    lengths: np.ndarray | None = None  # tokens per document
    texts: list[str] | None = None  # text mode only
    clean_counts: Counter[str] = field(default_factory=Counter)


def content_key(text_utf8: bytes) -> bytes:
    return hashlib.blake2b(text_utf8, digest_size=16).digest()


def unit_hash(key: bytes, salt: bytes = b"") -> float:
    """A deterministic number in [0, 1) from a content key (and a salt such as the seed)."""
    digest = hashlib.blake2b(salt + key, digest_size=8).digest() if salt else key[:8]
    return int.from_bytes(digest, "little") / 2.0**64


class BatchProcessor:
    """Turns raw documents into cleaned, hashed (and encoded) documents."""

    def __init__(self, spec: EncodeSpec):
        self.spec = spec
        self.tokenizer = None
        self.can_split = False
        if spec.tokenizer_json is not None:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_str(spec.tokenizer_json)
            # A literal "<|endoftext|>" inside a document is text, not a separator.
            self.tokenizer.encode_special_tokens = True
            self.can_split = splits_safely(json.loads(spec.tokenizer_json))
        self.dtype = np.dtype(spec.token_dtype)
        self.field_path = spec.jsonl_field.split(".")

    def __call__(self, items: list[RawDoc | Drop]) -> BatchResult:
        out = BatchResult()
        cleaner = Cleaner(self.spec.clean)
        texts: list[str] = []
        for item in items:
            if isinstance(item, Drop):
                out.docs_in += 1
                out.drops.append(item)
                continue
            out.raw_bytes += len(item.data)
            for source, text in self._documents(item, out):
                try:
                    cleaned = cleaner(text, is_html=item.kind == "html")
                except MalformedHTML:
                    out.drops.append(Drop(source, "malformed_html"))
                    continue
                reason = cleaner.drop_reason(cleaned)
                if reason is not None:
                    out.drops.append(Drop(source, reason))
                    continue
                try:
                    data = cleaned.encode("utf-8")
                except UnicodeEncodeError:  # a JSON "\ud800" escape: no UTF-8, no tokens
                    out.drops.append(Drop(source, "lone_surrogate"))
                    continue
                key = content_key(data)
                if self.tokenizer is None and unit_hash(key) >= self.spec.sample_fraction:
                    continue
                out.sources.append(source)
                out.keys.append(key)
                out.nbytes.append(len(data))
                texts.append(cleaned)
        out.clean_counts = cleaner.counts
        if self.tokenizer is None:
            out.texts = texts
        else:
            out.tokens, out.lengths = self._encode(texts)
        release_free_memory()
        return out

    def _documents(self, item: RawDoc, out: BatchResult) -> Iterator[tuple[str, str]]:
        """(source, text) for each document in a raw item; failures go to out.drops."""
        if item.kind != "jsonl":
            out.docs_in += 1
            text = decode_document(item.data, item.source, out.drops)
            if text is not None:
                yield item.source, text
            return
        for offset, line in enumerate(item.data.split(b"\n")):
            if not line.strip():
                continue
            out.docs_in += 1
            source = f"{item.source}:{item.first_line + offset}"
            try:
                obj: Any = json.loads(line)
            except ValueError:  # JSONDecodeError and UnicodeDecodeError
                out.drops.append(Drop(source, "malformed_jsonl"))
                continue
            except RecursionError:  # nested deeper than the interpreter's recursion limit
                out.drops.append(Drop(source, "jsonl_too_deep"))
                continue
            for key in self.field_path:
                obj = obj.get(key) if isinstance(obj, dict) else None
            if not isinstance(obj, str):
                out.drops.append(Drop(source, "missing_field"))
                continue
            yield source, obj

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of all texts, concatenated, and the count per text."""
        assert self.tokenizer is not None
        # Encoding objects carry strings and offsets per token (~100 bytes each): encode in
        # slices of ~ENCODE_CHARS and keep only compact ids, so memory stays small however
        # long a document is. Long documents are cut where encoding is unaffected.
        pieces: list[str] = []
        owner: list[int] = []
        for i, text in enumerate(texts):
            parts = split_for_encoding(text, ENCODE_CHARS) if self.can_split else [text]
            pieces += parts
            owner += [i] * len(parts)
        piece_lengths = np.zeros(len(pieces), dtype=np.int64)
        arrays: list[np.ndarray] = []
        for lo, hi in _slices([len(p) for p in pieces], ENCODE_CHARS):
            encodings = self.tokenizer.encode_batch_fast(pieces[lo:hi], add_special_tokens=False)
            ids = [e.ids for e in encodings]  # `.ids` builds a new list on every access
            del encodings
            piece_lengths[lo:hi] = [len(i) for i in ids]
            arrays.append(np.fromiter(itertools.chain.from_iterable(ids), dtype=self.dtype,
                                      count=int(piece_lengths[lo:hi].sum())))
        lengths = np.bincount(np.asarray(owner, dtype=np.int64), weights=piece_lengths,
                              minlength=len(texts)).astype(np.int64)
        tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=self.dtype)
        return tokens, lengths


def split_for_encoding(text: str, max_chars: int) -> list[str]:
    """Cut `text` into pieces of about `max_chars` where encoding the pieces separately gives
    exactly the ids of encoding the whole.

    GPT-2's pre-tokenizer regex (`'s|'t|…| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`)
    always ends a pre-token between two non-space characters of different classes (letter,
    number, other), except inside a contraction such as `'s`; it matches without looking
    behind, and BPE merges never cross pre-tokens. So such a point is a safe cut.
    """
    if len(text) <= max_chars:
        return [text]
    pieces = []
    start = 0
    while len(text) - start > max_chars:
        cut = _safe_cut(text, start + max_chars // 2, start + max_chars)
        if cut is None:
            break  # e.g. one giant word: encode the rest whole
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _char_class(c: str) -> str:
    cat = unicodedata.category(c)
    if c.isspace() or cat == "Cn":  # unassigned here might be a letter to the tokenizer's tables
        return ""
    return cat[0] if cat[0] in "LN" else "O"


def _safe_cut(text: str, lo: int, hi: int) -> int | None:
    """First i in [lo, hi) with text[i-1], text[i] non-space, of different classes, no `'` before."""
    prev = _char_class(text[lo - 1])
    for i in range(lo, min(hi, len(text))):
        cls = _char_class(text[i])
        if cls and prev and cls != prev and text[i - 1] != "'":
            return i
        prev = cls
    return None


def splits_safely(tokenizer_json: dict[str, Any]) -> bool:
    """True for our byte-level BPE setup (no normalizer, regex ByteLevel pre-tokenizer)."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    # Added (non-special) tokens are matched before pre-tokenization and could span a cut.
    added_newline = any("\n" in t.get("content", "") for t in tokenizer_json.get("added_tokens", [])
                        if not t.get("special"))
    return (
        not added_newline
        and tokenizer_json.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space", False)
    )


def _slices(sizes: list[int], limit: int) -> Iterator[tuple[int, int]]:
    """Consecutive index ranges whose sizes add up to about `limit`."""
    lo, total = 0, 0
    for i, size in enumerate(sizes):
        total += size
        if total >= limit:
            yield lo, i + 1
            lo, total = i + 1, 0
    if lo < len(sizes):
        yield lo, len(sizes)


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc only; a no-op elsewhere).

    The tokenizer's many short-lived allocations fragment the heap; without a trim the
    resident size creeps up with the amount of text processed instead of staying flat.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _load_malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_malloc_trim()


def decode_document(data: bytes, source: str, drops: list[Drop]) -> str | None:
    """Strict UTF-8 (a leading BOM dropped); binary or invalid files become drops."""
    if b"\x00" in data:
        drops.append(Drop(source, "binary"))
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        drops.append(Drop(source, "invalid_utf8"))
        return None
    return text[1:] if text.startswith("\ufeff") else text


# ---------------------------------------------------------------- worker pool

_PROCESSOR: BatchProcessor | None = None  # one per worker process, set by the initializer


def _init_worker(spec: EncodeSpec, threads: int) -> None:
    global _PROCESSOR
    # Workers split the cores between them; the tokenizer's own thread pool gets the rest.
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
    _PROCESSOR = BatchProcessor(spec)


def _run_batch(items: list[RawDoc | Drop]) -> BatchResult:
    assert _PROCESSOR is not None
    return _PROCESSOR(items)


def ordered_map(spec: EncodeSpec, batches: Iterable[list[RawDoc | Drop]], workers: int) -> Iterator[BatchResult]:
    """Process batches in order; with workers > 1, in that many spawned processes.

    At most `2·workers` batches are in flight, so memory stays bounded however
    large the corpus. With one worker everything runs in this process and the
    tokenizer parallelises each batch over threads itself.
    """
    if workers <= 1:
        processor = BatchProcessor(spec)
        for batch in batches:
            yield processor(batch)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: the parent may hold torch / tokenizer thread pools, which fork breaks.
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(spec, threads)) as pool:
        pending: deque[Any] = deque()
        for batch in batches:
            pending.append(pool.apply_async(_run_batch, (batch,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def batch_documents(items: Iterable[RawDoc | Drop], batch_bytes: int) -> Iterator[list[RawDoc | Drop]]:
    """Group raw documents into batches of about `batch_bytes`."""
    batch: list[RawDoc | Drop] = []
    size = 0
    for item in items:
        batch.append(item)
        size += len(item.data) if isinstance(item, RawDoc) else 0
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
