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
from clusterlm.data.bpe_process import train_tokenizer_in_subprocess
from clusterlm.data.encode import BatchResult, EncodeSpec, batch_documents, ordered_map, unit_hash
from clusterlm.data.inputs import Discovery, Drop, InputFile, discover
from clusterlm.data.owner_lock import OwnerLock, verdict
from clusterlm.data.readers import RawDoc, ReadLimits, read_file
from clusterlm.data.report import DropLog, PrepareStats, SplitStats, build_report, format_summary
from clusterlm.data.shards import MANIFEST_FORMAT, MANIFEST_VERSION, SPLITS, ShardWriter, file_sha256, token_dtype
from clusterlm.data.tokenizer import check_vocab_size, ensure_special_tokens, load_tokenizer, special_ids
from clusterlm.errors import DataError, OutputExistsError
from clusterlm.fsio import atomic_dir, atomic_write_json, atomic_write_text

# Raw bytes per batch handed to a worker: large enough to amortise process hops and
# let the tokenizer parallelise, small enough that a few in flight cost little memory.
BATCH_BYTES = 1 << 20
# A leftover temp dir with no owner record is deleted once untouched this long (a live
# owner writes its record right after creating the dir, so it is never that old without one).
_UNOWNED_TEMP_AGE_S = 3600
_LEGACY_PID_FILE = ".prepare-pid"  # what prepare wrote before owner_lock (a pid, no host)


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
        found = discover(config.inputs)
        source = ", ".join(config.inputs)
    else:
        found = Discovery(files=corpus.default_corpus_files())
        source = corpus.describe()
    if not found.files:
        raise DataError(f"no input files found in {source} (supported: .txt .md .rst .py .html .jsonl, "
                        "optionally .gz/.xz/.zst)" + _skipped_note(found.skipped))
    warnings = _remove_stale_temps(out)
    with atomic_dir(out, overwrite=replace) as tmp:
        with OwnerLock(tmp):  # removed again before the manifest: it is no part of the output
            manifest = _build(config, found, source, tmp, warnings, quiet, start)
        atomic_write_json(tmp / "manifest.json", manifest)  # last: marks the dir complete
    if not quiet:
        print(format_summary(manifest["report"], str(out)))
    return manifest["report"]


def _build(config: DataConfig, found: Discovery, source: str, tmp: Path, warnings: list[str], quiet: bool,
           start: float) -> dict[str, Any]:
    """Tokenizer, shards and report in `tmp`; returns the manifest (not yet written)."""
    reading = _Reading(config, found.files)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    tok, tok_info = _obtain_tokenizer(config, reading, quiet)
    seconds["tokenizer"] = time.perf_counter() - t0
    atomic_write_text(tmp / "tokenizer.json", tok.to_str(pretty=True))
    tok_info["sha256"] = file_sha256(tmp / "tokenizer.json")
    if tok_info["trained"] and tok_info["vocab_size"] < config.vocab_size:
        warnings.append(f"the corpus supports only {tok_info['vocab_size']:,} tokens "
                        f"(asked for {config.vocab_size:,})")

    t0 = time.perf_counter()
    stats, shards, dtype = _encode(config, reading, tok, tmp, quiet)
    seconds["encode"] = time.perf_counter() - t0
    if stats.docs_kept == 0:
        raise DataError(_nothing_left(stats.docs_in, stats.drops))
    warnings += _data_warnings(config, stats)
    seconds["total"] = time.perf_counter() - start
    report = build_report(stats, source=source, files=len(found.files), ignored=[str(p) for p in found.ignored],
                          skipped=found.skipped, tokenizer=tok_info, seconds=seconds, warnings=warnings)
    atomic_write_json(tmp / "report.json", report)
    eos_id, pad_id = special_ids(tok)
    return {
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


def _data_warnings(config: DataConfig, stats: PrepareStats) -> list[str]:
    warnings = []
    if config.val_fraction > 0 and stats.splits["val"].documents == 0:
        warnings.append("the val split is empty (too few documents for val_fraction); "
                        "raise data.val_fraction or add data")
    if stats.splits["train"].documents == 0:
        warnings.append("the train split is empty; lower data.val_fraction or add data")
    cut = {"file_truncated": "data.max_file_mb", "line_too_long": "data.max_line_mb"}
    for reason, key in cut.items():
        if stats.drops.counts.get(reason):
            warnings.append(f"{stats.drops.counts[reason]:,} input(s) hit the {key} cap ({reason}); "
                            f"raise {key} to read them")
    return warnings


# ---------------------------------------------------------------- passes


class _Reading:
    """What both passes read: the files in order, within the caps of the config."""

    def __init__(self, config: DataConfig, files: list[InputFile]):
        self.files = files
        self.cap_bytes = _bytes(config.max_input_mb)
        self.limits = ReadLimits(max_file_bytes=_bytes(config.max_file_mb), max_line_bytes=_bytes(config.max_line_mb))
        size = sum(f.size_bytes for f in files)
        self.estimate = size if self.cap_bytes is None else min(size, self.cap_bytes)

    def batches(self) -> Iterator[list[RawDoc | Drop]]:
        return batch_documents(self._documents(), BATCH_BYTES)

    def _documents(self) -> Iterator[RawDoc | Drop]:
        read = 0
        for f in self.files:
            if self.cap_bytes is not None and read >= self.cap_bytes:
                return
            for item in read_file(f, self.limits):
                yield item
                if isinstance(item, RawDoc):
                    read += len(item.data)


def _bytes(mb: float | None) -> int | None:
    return None if mb is None else int(mb * 1e6)


def _obtain_tokenizer(config: DataConfig, reading: _Reading, quiet: bool) -> tuple[Any, dict[str, Any]]:
    if config.tokenizer:
        tok = ensure_special_tokens(load_tokenizer(config.tokenizer))
        return tok, {"trained": False, "from": str(config.tokenizer), "vocab_size": tok.get_vocab_size()}

    sample_bytes = _bytes(config.tokenizer_sample_mb)
    estimate = reading.estimate
    fraction = 1.0 if sample_bytes is None or estimate <= 0 else min(1.0, 1.25 * sample_bytes / estimate)
    spec = EncodeSpec(clean=config.clean, jsonl_field=config.jsonl_field, sample_fraction=fraction)
    used = {"docs": 0, "bytes": 0, "in": 0}
    drops = DropLog()

    def texts() -> Iterator[str]:
        seen: set[bytes] = set()
        with _progress("tokenizer", estimate, quiet) as bar:
            for result in ordered_map(spec, reading.batches(), config.workers):
                _tick(bar, result, used["docs"] + len(result.keys))
                used["in"] += result.docs_in
                for drop in result.drops:
                    drops.add(drop)
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

    tok = train_tokenizer_in_subprocess(texts(), config.vocab_size, max_piece_chars=config.tokenizer_max_piece_chars)
    if used["docs"] == 0:
        raise DataError(_nothing_left(used["in"], drops))
    return tok, {"trained": True, "vocab_size": tok.get_vocab_size(), "requested_vocab_size": config.vocab_size,
                 "sample_docs": used["docs"], "sample_bytes": used["bytes"]}


def _encode(
    config: DataConfig, reading: _Reading, tok: Any, root: Path, quiet: bool
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
    with _progress("encode", reading.estimate, quiet) as bar:
        for result in ordered_map(spec, reading.batches(), config.workers):
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


def _remove_stale_temps(out: Path) -> list[str]:
    """Delete temp dirs left by a dead prepare of the same `out`; warnings for those kept.

    Ownership is decided by `owner_lock.verdict`: a temp dir of a live prepare, here or on
    another host sharing this filesystem, is never deleted.
    """
    warnings: list[str] = []
    if not out.parent.is_dir():
        return warnings
    for tmp in sorted(out.parent.glob(f".{out.name}.*.tmp")):
        state, owner = verdict(tmp)
        if state == "dead":
            shutil.rmtree(tmp, ignore_errors=True)
        elif state == "other_host" and owner is not None:
            warnings.append(f"left {tmp} alone: it belongs to prepare {owner.describe()}; "
                            "delete it by hand if that run is gone")
        elif state == "unknown" and (tmp / _LEGACY_PID_FILE).exists():
            warnings.append(f"left {tmp} alone: an older clusterlm's prepare made it and recorded no host; "
                            "delete it by hand if no prepare of this output is running")
        elif state == "unknown":
            # No owner record: its owner died before writing one, so it is removed once old.
            with contextlib.suppress(OSError):
                if tmp.is_dir() and time.time() - tmp.stat().st_mtime > _UNOWNED_TEMP_AGE_S:
                    shutil.rmtree(tmp, ignore_errors=True)
    return warnings


def _nothing_left(docs_in: int, drops: DropLog) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(drops.counts.items())) or "no documents"
    return f"nothing left after cleaning: {docs_in} documents in, all dropped ({reasons})"


def _skipped_note(skipped: list[Drop]) -> str:
    if not skipped:
        return ""
    counts = DropLog()
    for drop in skipped:
        counts.add(drop)
    shown = (f"{reason} {n} (e.g. {counts.examples[reason][0]})" for reason, n in sorted(counts.counts.items()))
    return "; skipped: " + ", ".join(shown)


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
