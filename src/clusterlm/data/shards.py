"""Shard files and the dataset manifest.

A split is a flat stream of token ids (documents each followed by the EOS id)
cut into files `shards/{split}-{i:05d}.bin` of `shard_tokens` tokens (the last
one shorter), raw little-endian `uint16` when the vocabulary fits, else `uint32`.
`manifest.json` is written last and is what makes a dataset dir complete: it
lists every shard with its token count and sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import IO, Any

import numpy as np

from clusterlm.errors import DataError

MANIFEST_FORMAT = "clusterlm-dataset"
MANIFEST_VERSION = 1
SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 holds ids < 65,536: the vocabulary must fit (ids 0 … vocab_size−1)."""
    return np.dtype("<u2") if vocab_size <= 65_535 else np.dtype("<u4")


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


class ShardWriter:
    """Append token arrays to one split's stream, rolling over to a new file every `shard_tokens`.

    Only the array being appended is in memory; each shard's sha256 is computed
    as it is written (no second read).
    """

    def __init__(self, root: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.root = root
        self.split = split
        self.dtype = np.dtype(dtype)
        self.shard_tokens = shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.total_tokens = 0
        self._fh: IO[bytes] | None = None
        self._hash: Any = None
        self._in_shard = 0

    def append(self, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens, dtype=self.dtype)
        while tokens.size:
            if self._fh is None:
                self._open()
            take = min(tokens.size, self.shard_tokens - self._in_shard)
            data = tokens[:take].tobytes()
            assert self._fh is not None
            self._fh.write(data)
            self._hash.update(data)
            self._in_shard += take
            self.total_tokens += take
            tokens = tokens[take:]
            if self._in_shard == self.shard_tokens:
                self._finish()

    def close(self) -> list[dict[str, Any]]:
        if self._fh is not None:
            self._finish()
        return self.shards

    def _open(self) -> None:
        name = f"shards/{self.split}-{len(self.shards):05d}.bin"
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        self._fh = open(self.root / name, "wb")  # noqa: SIM115 - closed in _finish
        self._hash = hashlib.sha256()
        self._in_shard = 0
        self.shards.append({"file": name, "tokens": 0, "sha256": ""})

    def _finish(self) -> None:
        assert self._fh is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())  # on disk before the manifest can vouch for it
        self._fh.close()
        self._fh = None
        self.shards[-1].update(tokens=self._in_shard, sha256=self._hash.hexdigest())


# ---------------------------------------------------------------- manifest reading


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a dataset dir, structurally checked; DataError with a fix otherwise."""
    if not root.exists():
        raise DataError(f"dataset dir not found: {root} (create it with 'clusterlm prepare --out {root}')")
    if not root.is_dir():
        raise DataError(f"dataset path is not a directory: {root}")
    path = root / "manifest.json"
    if not path.is_file():
        raise DataError(
            f"dataset dir {root} is incomplete: no manifest.json (was 'clusterlm prepare' interrupted? "
            "run it again with --overwrite)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path} is not a clusterlm dataset manifest")
    version = manifest.get("version")
    if version != MANIFEST_VERSION:
        raise DataError(
            f"{path}: dataset format version {version!r} is not supported (this clusterlm reads version "
            f"{MANIFEST_VERSION}); re-run 'clusterlm prepare'"
        )
    try:
        dtype = np.dtype(manifest["dtype"])
        vocab = int(manifest["vocab_size"])
        splits = manifest["splits"]
        for split in splits.values():
            for shard in split["shards"]:
                int(shard["tokens"]), str(shard["file"]), str(shard["sha256"])
            int(split["tokens"]), int(split["bytes"])
        int(manifest["eos_id"]), int(manifest["pad_id"]), str(manifest["tokenizer"]["sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path} is malformed ({type(exc).__name__}: {exc}); re-run 'clusterlm prepare'") from None
    if dtype not in (np.dtype("<u2"), np.dtype("<u4")):
        raise DataError(f"{path}: unsupported token dtype {manifest['dtype']!r} (expected uint16 or uint32)")
    if dtype != token_dtype(vocab) and dtype == np.dtype("<u2"):
        raise DataError(f"{path}: dtype uint16 cannot hold a vocabulary of {vocab} tokens")
    return manifest


def scan_shard(path: Path, dtype: np.dtype, chunk_bytes: int = 1 << 22) -> tuple[str, int]:
    """(sha256, largest token id) of one shard in a single read (-1 for an empty shard)."""
    h = hashlib.sha256()
    largest = -1
    chunk_bytes -= chunk_bytes % dtype.itemsize
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            h.update(chunk)
            ids = np.frombuffer(chunk, dtype=dtype, count=len(chunk) // dtype.itemsize)
            if ids.size:
                largest = max(largest, int(ids.max()))
    return h.hexdigest(), largest


def fingerprint(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """What a verification of `root` vouches for: the manifest's bytes and every shard's size and
    modification time (a shard rewritten since has another mtime)."""
    stats = {}
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            st = (root / shard["file"]).stat()
            stats[shard["file"]] = [st.st_size, st.st_mtime_ns]
    return {"manifest_sha256": file_sha256(root / "manifest.json"), "shards": stats}


def verify_files(root: Path, manifest: dict[str, Any], sha256: bool = False) -> None:
    """Every shard exists with the size its token count implies; with `sha256`, also the hashes of
    the tokenizer and every shard, and that no token id is outside the vocabulary."""
    itemsize = np.dtype(manifest["dtype"]).itemsize
    tok_path = root / manifest["tokenizer"].get("file", "tokenizer.json")
    if not tok_path.is_file():
        raise DataError(f"dataset dir {root} is incomplete: {tok_path.name} is missing")
    if sha256 and file_sha256(tok_path) != manifest["tokenizer"]["sha256"]:
        raise DataError(f"{tok_path} does not match the manifest's sha256 (corrupted or replaced)")
    for name, split in manifest["splits"].items():
        counted = 0
        for shard in split["shards"]:
            path = root / shard["file"]
            if not path.is_file():
                raise DataError(f"dataset dir {root} is incomplete: shard {shard['file']} is missing")
            expected = shard["tokens"] * itemsize
            actual = path.stat().st_size
            if actual != expected:
                raise DataError(
                    f"shard {path} has {actual} bytes but the manifest says {shard['tokens']} tokens "
                    f"× {itemsize} bytes = {expected} (truncated or corrupted; re-run 'clusterlm prepare')"
                )
            if sha256:
                _check_contents(path, shard["sha256"], np.dtype(manifest["dtype"]), int(manifest["vocab_size"]))
            counted += shard["tokens"]
        if counted != split["tokens"]:
            raise DataError(f"manifest split '{name}' says {split['tokens']} tokens but its shards hold {counted}")


def _check_contents(path: Path, expected_sha256: str, dtype: np.dtype, vocab_size: int) -> None:
    digest, largest = scan_shard(path, dtype)
    if digest != expected_sha256:
        raise DataError(f"shard {path} does not match the manifest's sha256 (corrupted; re-run 'clusterlm prepare')")
    if largest >= vocab_size:
        raise DataError(f"shard {path} holds token id {largest}, outside the vocabulary of {vocab_size} "
                        "(written with another tokenizer?); re-run 'clusterlm prepare'")
