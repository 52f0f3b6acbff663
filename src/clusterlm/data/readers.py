"""Find input files and read them as raw documents, streaming.

Inputs are files, directories (walked recursively, sorted, hidden dirs skipped)
and globs. Formats by extension: `.txt .md .rst .py` (plain text), `.html .htm`
(HTML), `.jsonl` (one JSON object per line, text in a configurable field), each
optionally compressed as `.gz`, `.xz` or `.zst`. A file named explicitly with an
unknown extension is read as plain text; in directories such files are ignored
(and counted).

Reading happens in the parent process and yields *raw bytes*: decoding, JSON
parsing and cleaning run in the encode workers. Failures that can only be seen
while reading (unreadable file, corrupt archive) become `Drop` records so that a
bad file never stops the run and is never silently lost.
"""

from __future__ import annotations

import glob
import gzip
import io
import lzma
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from clusterlm.errors import DataError

KINDS = {".txt": "text", ".md": "text", ".rst": "text", ".py": "text", ".html": "html", ".htm": "html",
         ".jsonl": "jsonl"}
COMPRESSIONS = (".gz", ".xz", ".zst")
# Plain-text files larger than this are cut into documents at paragraph breaks, so one
# huge file never has to sit in memory whole (HTML cannot be cut; JSONL streams by line).
BIG_TEXT_BYTES = 16 << 20
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    path: Path
    kind: str  # "text" | "html" | "jsonl"
    compression: str  # "" | ".gz" | ".xz" | ".zst"

    @property
    def size_bytes(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0


@dataclass(frozen=True)
class RawDoc:
    """One document's undecoded bytes (`kind` text/html) or a run of JSONL lines."""

    source: str  # path, or path:line for JSONL
    kind: str
    data: bytes
    first_line: int = 1  # JSONL: line number of the first line in `data`


@dataclass(frozen=True)
class Drop:
    """A document (or file) that could not be read; counted in the report."""

    source: str
    reason: str


def classify(path: Path, explicit: bool) -> InputFile | None:
    """Kind and compression from the file name; None if unsupported (directory walks)."""
    name = path.name.lower()
    compression = next((c for c in COMPRESSIONS if name.endswith(c)), "")
    stem = name[: len(name) - len(compression)] if compression else name
    kind = KINDS.get(os.path.splitext(stem)[1])
    if kind is None:
        if not explicit:
            return None
        kind = "text"
    return InputFile(path, kind, compression)


def discover(inputs: list[str]) -> tuple[list[InputFile], list[Path]]:
    """Resolve inputs to files in a deterministic order; also the ignored (unsupported) files.

    DataError if an input path does not exist or a glob matches nothing.
    """
    files: list[InputFile] = []
    ignored: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path, explicit: bool) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        f = classify(path, explicit)
        if f is None:
            ignored.append(path)
        else:
            files.append(f)

    for item in inputs:
        p = Path(item).expanduser()
        if p.exists():
            matches = [p]
        elif _GLOB_CHARS & set(item):
            matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(item), recursive=True))]
            if not matches:
                raise DataError(f"input glob matched no files: {item}")
        else:
            raise DataError(f"input path not found: {item}")
        for m in matches:
            if m.is_dir():
                for f in walk_dir(m):
                    add(f, explicit=False)
            else:
                add(m, explicit=True)
    return files, ignored


def walk_dir(root: Path, skip_dir: Callable[[str], bool] | None = None) -> Iterator[Path]:
    """Files under `root`, sorted, skipping hidden directories, `__pycache__` and `skip_dir(name)`."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and d != "__pycache__" and not (skip_dir and skip_dir(d))
        )
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def open_binary(f: InputFile) -> IO[bytes]:
    """The file's decompressed byte stream."""
    if f.compression == ".gz":
        return gzip.open(f.path, "rb")
    if f.compression == ".xz":
        return lzma.open(f.path, "rb")
    if f.compression == ".zst":
        import zstandard

        fh = open(f.path, "rb")  # noqa: SIM115 - closed with the reader
        # BufferedReader adds the line iteration that JSONL reading needs.
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(fh, closefd=True))
    return open(f.path, "rb")  # noqa: SIM115 - the caller closes it


def _read_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, EOFError, lzma.LZMAError, zlib.error]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover - zstandard is a dependency
        pass
    return tuple(errors)


READ_ERRORS = _read_errors()


def read_file(f: InputFile, jsonl_chunk_bytes: int = 1 << 20) -> Iterator[RawDoc | Drop]:
    """Yield the raw documents of one file (or a Drop if it cannot be read)."""
    src = str(f.path)
    try:
        with open_binary(f) as fh:
            if f.kind == "jsonl":
                yield from _jsonl_chunks(fh, src, jsonl_chunk_bytes)
            elif f.kind == "text":
                yield from _text_pieces(fh, src)
            else:
                yield RawDoc(src, f.kind, fh.read())
    except READ_ERRORS as exc:
        compressed = f.compression and not isinstance(exc, (PermissionError, FileNotFoundError, IsADirectoryError))
        yield Drop(src, "corrupt_archive" if compressed else "unreadable")


def _text_pieces(fh: IO[bytes], src: str) -> Iterator[RawDoc]:
    data = fh.read(BIG_TEXT_BYTES + 1)
    if len(data) <= BIG_TEXT_BYTES:
        yield RawDoc(src, "text", data)
        return
    # A huge text file: cut at the last paragraph break (else line break) of each block.
    part = 0
    while data:
        more = fh.read(BIG_TEXT_BYTES)
        data += more
        if not more:
            cut = len(data)
        else:
            cut = _cut_point(data, BIG_TEXT_BYTES)
        yield RawDoc(f"{src}#part{part}", "text", data[:cut])
        part += 1
        data = data[cut:]


def _cut_point(data: bytes, limit: int) -> int:
    for sep in (b"\n\n", b"\n"):
        i = data.rfind(sep, 0, limit)
        if i > 0:
            return i + len(sep)
    # No line break at all: cut before a UTF-8 lead byte so no character is split.
    i = limit
    while i > 0 and (data[i] & 0xC0) == 0x80:
        i -= 1
    return i or limit


def _jsonl_chunks(fh: IO[bytes], src: str, chunk_bytes: int) -> Iterator[RawDoc]:
    lines: list[bytes] = []
    size = 0
    first = 1
    line_no = 0
    for line in fh:
        line_no += 1
        lines.append(line)
        size += len(line)
        if size >= chunk_bytes:
            yield RawDoc(src, "jsonl", b"".join(lines), first)
            lines, size, first = [], 0, line_no + 1
    if lines:
        yield RawDoc(src, "jsonl", b"".join(lines), first)
