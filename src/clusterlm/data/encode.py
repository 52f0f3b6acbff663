"""Decode, clean, hash and encode batches of raw documents — in worker processes.

The parent reads files and cuts them into batches of raw documents (a few MB);
`process_batch` turns one batch into cleaned-document hashes plus token ids.
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
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clusterlm.config.data import CleanConfig
from clusterlm.data.clean import Cleaner
from clusterlm.data.readers import Drop, RawDoc


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
        if spec.tokenizer_json is not None:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_str(spec.tokenizer_json)
            # A literal "<|endoftext|>" inside a document is text, not a separator.
            self.tokenizer.encode_special_tokens = True
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
                cleaned = cleaner(text, is_html=item.kind == "html")
                reason = cleaner.drop_reason(cleaned)
                if reason is not None:
                    out.drops.append(Drop(source, reason))
                    continue
                data = cleaned.encode("utf-8")
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
            for key in self.field_path:
                obj = obj.get(key) if isinstance(obj, dict) else None
            if not isinstance(obj, str):
                out.drops.append(Drop(source, "missing_field"))
                continue
            yield source, obj

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        assert self.tokenizer is not None
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        ids = [e.ids for e in encodings]  # `.ids` builds a new list on every access
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=self.dtype, count=int(lengths.sum()))
        return tokens, lengths


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
