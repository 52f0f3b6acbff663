"""`prepare_dataset`: raw text in, a complete dataset dir out.

Two streaming passes over the input (files are read in a fixed order, so the
result does not depend on the number of workers):

1. unless a tokenizer is given, clean a hash-sampled subset and train the BPE;
2. clean and encode everything, drop exact duplicates (content hash), send each
   document to train or val by a seeded hash of its content, append its ids and
   an EOS to that split's shard writer.

Everything is written inside a temporary sibling directory that is renamed to
`out` only after `manifest.json` (written last) is in place, so an interrupted
prepare never leaves a directory that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from clusterlm.config.data import DataConfig
from clusterlm.data import corpus
from clusterlm.data.encode import BatchResult, EncodeSpec, batch_documents, ordered_map, unit_hash
from clusterlm.data.readers import Drop, InputFile, RawDoc, discover, read_file
from clusterlm.data.report import PrepareStats, SplitStats, build_report, format_summary
from clusterlm.data.shards import MANIFEST_FORMAT, MANIFEST_VERSION, SPLITS, ShardWriter, file_sha256, token_dtype
from clusterlm.data.tokenizer import (
    check_vocab_size,
    ensure_special_tokens,
    load_tokenizer,
    special_ids,
    train_tokenizer,
)
from clusterlm.errors import DataError, OutputExistsError
from clusterlm.fsio import atomic_dir, atomic_write_json, atomic_write_text

# Raw bytes per batch handed to a worker: large enough to amortise process hops and
# let the tokenizer parallelise, small enough that a few in flight cost little memory.
BATCH_BYTES = 1 << 20
_PID_FILE = ".prepare-pid"


def prepare_dataset(config: DataConfig, out: str | Path, overwrite: bool = False, quiet: bool = True) -> dict[str, Any]:
    """Build the dataset dir `out` from `config.inputs` (or the default corpus); return the report.

    Raises DataError (missing input, nothing left after cleaning, bad tokenizer),
    OutputExistsError (non-empty `out` without `overwrite`).
    """
    start = time.perf_counter()
    out = Path(out)
    replace = _check_output(out, overwrite)
    check_vocab_size(config.vocab_size)
    if config.inputs:
        files, ignored = discover(config.inputs)
        source = ", ".join(config.inputs)
    else:
        files, ignored = corpus.default_corpus_files(), []
        source = corpus.describe()
    if not files:
        raise DataError(f"no input files found in {source} (supported: .txt .md .rst .py .html .jsonl, "
                        "optionally .gz/.xz/.zst)")
    cap_bytes = int(config.max_input_mb * 1e6) if config.max_input_mb else None
    estimate = sum(f.size_bytes for f in files)
    if cap_bytes is not None:
        estimate = min(estimate, cap_bytes)
    _remove_stale_temps(out)

    seconds: dict[str, float] = {}
    warnings: list[str] = []
    with atomic_dir(out, overwrite=replace) as tmp:
        (tmp / _PID_FILE).write_text(str(os.getpid()))
        t0 = time.perf_counter()
        tok, tok_info = _obtain_tokenizer(config, files, cap_bytes, estimate, quiet)
        seconds["tokenizer"] = time.perf_counter() - t0
        atomic_write_text(tmp / "tokenizer.json", tok.to_str(pretty=True))
        tok_info["sha256"] = file_sha256(tmp / "tokenizer.json")
        if tok_info["trained"] and tok_info["vocab_size"] < config.vocab_size:
            warnings.append(f"the corpus supports only {tok_info['vocab_size']:,} tokens "
                            f"(asked for {config.vocab_size:,})")

        t0 = time.perf_counter()
        stats, shards, dtype = _encode(config, files, cap_bytes, estimate, tok, tmp, quiet)
        seconds["encode"] = time.perf_counter() - t0
        if stats.docs_kept == 0:
            raise DataError(_nothing_left(stats))
        if config.val_fraction > 0 and stats.splits["val"].documents == 0:
            warnings.append("the val split is empty (too few documents for val_fraction); "
                            "raise data.val_fraction or add data")
        if stats.splits["train"].documents == 0:
            warnings.append("the train split is empty; lower data.val_fraction or add data")
        seconds["total"] = time.perf_counter() - start
        report = build_report(stats, source=source, files=len(files), ignored=[str(p) for p in ignored],
                              tokenizer=tok_info, seconds=seconds, warnings=warnings)
        atomic_write_json(tmp / "report.json", report)
        eos_id, pad_id = special_ids(tok)
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "tokenizer": {"file": "tokenizer.json", "sha256": tok_info["sha256"]},
            "vocab_size": tok.get_vocab_size(),
            "eos_id": eos_id,
            "pad_id": pad_id,
            "dtype": dtype.name,
            "shard_tokens": config.shard_tokens,
            "seed": config.seed,
            "val_fraction": config.val_fraction,
            # The settings that made this dir (so a caller can tell whether it can be reused).
            "config": config.model_dump(mode="json", exclude={"dir", "workers"}),
            "splits": {
                name: {"documents": s.documents, "tokens": s.tokens, "bytes": s.bytes, "shards": shards[name]}
                for name, s in stats.splits.items()
            },
            "report": report,
        }
        (tmp / _PID_FILE).unlink()
        atomic_write_json(tmp / "manifest.json", manifest)  # last: marks the dir complete
    if not quiet:
        print(format_summary(report, str(out)))
    return report


# ---------------------------------------------------------------- passes


def _raw_documents(files: list[InputFile], cap_bytes: int | None) -> Iterator[RawDoc | Drop]:
    read = 0
    for f in files:
        if cap_bytes is not None and read >= cap_bytes:
            return
        for item in read_file(f):
            yield item
            if isinstance(item, RawDoc):
                read += len(item.data)


def _batches(files: list[InputFile], cap_bytes: int | None) -> Iterator[list[RawDoc | Drop]]:
    return batch_documents(_raw_documents(files, cap_bytes), BATCH_BYTES)


def _obtain_tokenizer(
    config: DataConfig, files: list[InputFile], cap_bytes: int | None, estimate: int, quiet: bool
) -> tuple[Any, dict[str, Any]]:
    if config.tokenizer:
        tok = ensure_special_tokens(load_tokenizer(config.tokenizer))
        return tok, {"trained": False, "from": str(config.tokenizer), "vocab_size": tok.get_vocab_size()}

    sample_bytes = int(config.tokenizer_sample_mb * 1e6) if config.tokenizer_sample_mb else None
    fraction = 1.0 if sample_bytes is None or estimate <= 0 else min(1.0, 1.25 * sample_bytes / estimate)
    spec = EncodeSpec(clean=config.clean, jsonl_field=config.jsonl_field, sample_fraction=fraction)
    used = {"docs": 0, "bytes": 0}

    def texts() -> Iterator[str]:
        seen: set[bytes] = set()
        with _progress("tokenizer", estimate, quiet) as bar:
            for result in ordered_map(spec, _batches(files, cap_bytes), config.workers):
                _tick(bar, result, used["docs"] + len(result.keys))
                assert result.texts is not None
                for key, nbytes, text in zip(result.keys, result.nbytes, result.texts):
                    if config.clean.dedup:
                        if key in seen:
                            continue
                        seen.add(key)
                    used["docs"] += 1
                    used["bytes"] += nbytes
                    yield text
                    if sample_bytes is not None and used["bytes"] >= sample_bytes:
                        return

    tok = train_tokenizer(texts(), config.vocab_size)
    if used["docs"] == 0:
        raise DataError("nothing left after cleaning: every input document was dropped "
                        "(see data.clean.min_chars and the input format)")
    return tok, {"trained": True, "vocab_size": tok.get_vocab_size(), "requested_vocab_size": config.vocab_size,
                 "sample_docs": used["docs"], "sample_bytes": used["bytes"]}


def _encode(
    config: DataConfig,
    files: list[InputFile],
    cap_bytes: int | None,
    estimate: int,
    tok: Any,
    root: Path,
    quiet: bool,
) -> tuple[PrepareStats, dict[str, list[dict[str, Any]]], np.dtype]:
    dtype = token_dtype(tok.get_vocab_size())
    eos_id, _ = special_ids(tok)
    eos = np.array([eos_id], dtype=dtype)
    spec = EncodeSpec(clean=config.clean, jsonl_field=config.jsonl_field, tokenizer_json=tok.to_str(),
                      token_dtype=dtype.str)
    writers = {name: ShardWriter(root, name, dtype, config.shard_tokens) for name in SPLITS}
    stats = PrepareStats(splits={name: SplitStats() for name in SPLITS})
    salt = f"split:{config.seed}:".encode()
    seen: set[bytes] = set()
    with _progress("encode", estimate, quiet) as bar:
        for result in ordered_map(spec, _batches(files, cap_bytes), config.workers):
            _tick(bar, result, stats.docs_in + result.docs_in)
            stats.raw_bytes += result.raw_bytes
            stats.docs_in += result.docs_in
            stats.clean_counts.update(result.clean_counts)
            for drop in result.drops:
                stats.drops.add(drop)
            assert result.tokens is not None and result.lengths is not None
            ends = np.cumsum(result.lengths)
            pieces: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
            for i, (key, nbytes, src) in enumerate(zip(result.keys, result.nbytes, result.sources)):
                if config.clean.dedup:
                    if key in seen:
                        stats.drops.add(Drop(src, "duplicate"))
                        continue
                    seen.add(key)
                name = "val" if unit_hash(key, salt) < config.val_fraction else "train"
                ids = result.tokens[ends[i] - result.lengths[i] : ends[i]]
                pieces[name] += [ids, eos]
                split = stats.splits[name]
                split.documents += 1
                split.bytes += nbytes
                split.tokens += len(ids) + 1
            for name, parts in pieces.items():
                if parts:
                    writers[name].append(np.concatenate(parts))
    shards = {name: w.close() for name, w in writers.items()}
    return stats, shards, dtype


# ---------------------------------------------------------------- helpers


def _check_output(out: Path, overwrite: bool) -> bool:
    """Refuse a non-empty `out` without overwrite; True if an existing `out` may be replaced."""
    if not out.exists():
        return False
    empty_dir = out.is_dir() and not any(out.iterdir())
    if not empty_dir and not overwrite:
        raise OutputExistsError(f"output {out} already exists and is not empty; pass --overwrite to replace it")
    return True


def _remove_stale_temps(out: Path) -> None:
    """Delete temp dirs left by a killed prepare of the same `out` (their process is gone)."""
    if not out.parent.is_dir():
        return
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):
        pid_file = tmp / _PID_FILE
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            # Not ours, or killed before writing its pid: only clearly old ones go.
            with contextlib.suppress(OSError):
                if tmp.is_dir() and time.time() - tmp.stat().st_mtime > 3600:
                    shutil.rmtree(tmp, ignore_errors=True)
            continue
        if not _alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _nothing_left(stats: PrepareStats) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(stats.drops.counts.items())) or "no documents"
    return f"nothing left after cleaning: {stats.docs_in} documents in, all dropped ({reasons})"


@contextlib.contextmanager
def _progress(desc: str, total_bytes: int, quiet: bool) -> Iterator[Any]:
    """A tqdm bar on stderr in MB and MB/s; None when quiet or stderr is not a terminal."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except OSError:
        size = os.terminal_size((0, 0))
    # A terminal that reports a 0×0 size (fresh ptys, some CI shells) would hide the bar.
    bar = tqdm(total=total_bytes or None, desc=desc, unit="B", unit_scale=True, unit_divisor=1000,
               file=sys.stderr, leave=False, ncols=size.columns or 100, nrows=size.lines or 24,
               postfix={"docs": 0})
    try:
        yield bar
    finally:
        bar.close()


def _tick(bar: Any, result: BatchResult, docs: int) -> None:
    if bar is not None:
        bar.set_postfix(docs=docs, refresh=False)
        bar.update(result.raw_bytes)
