"""Read input files as raw documents, streaming, within size limits.

Reading happens in the parent process and yields *raw bytes*: decoding, JSON
parsing and cleaning run in the encode workers. Failures that can only be seen
while reading become `Drop` records so that a bad file never stops the run and is
never silently lost:

- only regular files are read: a FIFO, a device (`/dev/zero`) or a socket is
  skipped by its `stat` before it is opened (a FIFO's open would block, a device
  can be endless), and the open itself is non-blocking and re-checked with
  `fstat`, so a path swapped in between cannot hang the run either;
- `ReadLimits.max_file_bytes` caps what is read of one file (decompressed): the
  rest is skipped (`file_truncated`), which also bounds decompression bombs;
- `ReadLimits.max_line_bytes` caps one JSONL line (one record): a longer line is
  skipped (`line_too_long`) without ever being held in memory whole;
- plain text over `BIG_TEXT_BYTES` is cut into documents at paragraph breaks and
  HTML (which is parsed whole) over it is skipped (`html_too_large`).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import lzma
import os
import stat
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from clusterlm.data.inputs import Drop, InputFile

# Plain-text files larger than this are cut into documents at paragraph breaks, so one
# huge file never has to sit in memory whole (JSONL streams by line; HTML cannot be cut).
BIG_TEXT_BYTES = 16 << 20
_SKIP_CHUNK = 1 << 20  # bytes per read while skipping the rest of an over-long line


@dataclass(frozen=True)
class ReadLimits:
    """Per-file caps (None = no cap); `DataConfig.max_file_mb` / `max_line_mb` set them."""

    max_file_bytes: int | None = None  # decompressed bytes read of one file
    max_line_bytes: int | None = None  # one JSONL line, newline excluded


@dataclass(frozen=True)
class RawDoc:
    """One document's undecoded bytes (`kind` text/html) or a run of JSONL lines."""

    source: str  # path, or path:line for JSONL
    kind: str
    data: bytes
    first_line: int = 1  # JSONL: line number of the first line in `data`


class _NotRegular(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def _special_kind(mode: int) -> str | None:
    """Reason for skipping a file that is not a regular file (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "not_a_file"  # a directory that appeared after discovery, or something stranger


def open_regular(path: os.PathLike[str] | str) -> IO[bytes]:
    """Open a regular file for reading without ever blocking on a FIFO or device.

    Raises `_NotRegular` (with the reason) for anything else, OSError if it cannot be opened.
    """
    kind = _special_kind(os.stat(path).st_mode)
    if kind is not None:
        raise _NotRegular(kind)
    # O_NONBLOCK: if the path became a FIFO since the stat, open returns at once instead
    # of waiting for a writer; fstat then tells what was really opened.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        kind = _special_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise _NotRegular(kind)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=1 << 16)
    except BaseException:
        os.close(fd)
        raise


def open_binary(f: InputFile, stack: contextlib.ExitStack) -> IO[bytes]:
    """The file's decompressed byte stream; `stack` closes it (and the file under it)."""
    raw = stack.enter_context(open_regular(f.path))
    if f.compression == ".gz":
        return stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
    if f.compression == ".xz":
        return stack.enter_context(lzma.LZMAFile(raw, "rb"))
    if f.compression == ".zst":
        import zstandard

        reader = stack.enter_context(zstandard.ZstdDecompressor().stream_reader(raw, closefd=False))
        # BufferedReader adds the line iteration that JSONL reading needs.
        return stack.enter_context(io.BufferedReader(reader))  # type: ignore[arg-type]
    return raw


def _read_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, EOFError, lzma.LZMAError, zlib.error]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover - zstandard is a dependency
        pass
    return tuple(errors)


READ_ERRORS = _read_errors()


def read_file(f: InputFile, limits: ReadLimits = ReadLimits(), jsonl_chunk_bytes: int = 1 << 20
              ) -> Iterator[RawDoc | Drop]:
    """Yield the raw documents of one file, or Drops for what cannot or may not be read."""
    src = str(f.path)
    try:
        with contextlib.ExitStack() as stack:
            fh = _Capped(open_binary(f, stack), limits.max_file_bytes)
            if f.kind == "jsonl":
                yield from _jsonl_chunks(fh, src, jsonl_chunk_bytes, limits.max_line_bytes)
            elif f.kind == "text":
                yield from _text_pieces(fh, src)
            else:
                data = fh.read(BIG_TEXT_BYTES + 1)
                if len(data) > BIG_TEXT_BYTES:  # parsed whole, so never held past this size
                    yield Drop(src, "html_too_large")
                    return
                yield RawDoc(src, f.kind, data)
            if fh.truncated:
                yield Drop(src, "file_truncated")
    except _NotRegular as exc:
        yield Drop(src, exc.reason)
    except READ_ERRORS as exc:
        yield Drop(src, _read_error_reason(f, exc))


def _read_error_reason(f: InputFile, exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "symlink_loop"
    if f.compression and not isinstance(exc, (PermissionError, FileNotFoundError, IsADirectoryError)):
        return "corrupt_archive"
    return "unreadable"


class _Capped:
    """A reader over `fh` that ends after `limit` bytes; `truncated` once it is known that
    `fh` had more (checked as soon as the limit is reached)."""

    def __init__(self, fh: IO[bytes], limit: int | None):
        self.fh, self.left, self.truncated = fh, limit, False

    def read(self, n: int) -> bytes:
        return self._take(self.fh.read, n)

    def readline(self, n: int = -1) -> bytes:
        return self._take(self.fh.readline, n)

    def _take(self, read: Callable[[int], bytes], n: int) -> bytes:
        if self.left is None:
            return read(n)
        if self.left <= 0:
            return b""
        data = read(self.left if n < 0 else min(n, self.left))
        self.left -= len(data)
        if self.left <= 0 and self.fh.read(1):
            self.truncated = True
        return data


def _text_pieces(fh: _Capped, src: str) -> Iterator[RawDoc]:
    data = fh.read(BIG_TEXT_BYTES + 1)
    if len(data) <= BIG_TEXT_BYTES and not fh.truncated:
        yield RawDoc(src, "text", data)
        return
    # A huge text file: cut at the last paragraph break (else line break) of each block.
    part = 0
    while data:
        more = fh.read(BIG_TEXT_BYTES)
        data += more
        if not more and not fh.truncated:
            cut = len(data)
        else:
            cut = _cut_point(data, min(len(data), BIG_TEXT_BYTES))
        yield RawDoc(f"{src}#part{part}", "text", data[:cut])
        part += 1
        data = data[cut:]
        if not more and fh.truncated:
            return  # the rest of the block is cut off by the file cap (counted as file_truncated)


def _cut_point(data: bytes, limit: int) -> int:
    for sep in (b"\n\n", b"\n"):
        i = data.rfind(sep, 0, limit)
        if i > 0:
            return i + len(sep)
    return _char_boundary(data, limit) or limit


def _char_boundary(data: bytes, limit: int) -> int:
    """The last offset <= limit that does not split a UTF-8 character (0 if none)."""
    i = limit
    while i > 0 and i < len(data) and (data[i] & 0xC0) == 0x80:  # data[i] continues a character
        i -= 1
    if i == len(data):  # cut at the end: drop a last character that is incomplete
        start = i - 1
        while start > 0 and i - start < 4 and (data[start] & 0xC0) == 0x80:
            start -= 1
        lead = data[start] if data else 0
        need = 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        if start >= 0 and start + need > i:
            i = start
    return i


def _jsonl_chunks(fh: _Capped, src: str, chunk_bytes: int, max_line: int | None) -> Iterator[RawDoc | Drop]:
    """Runs of whole lines (about `chunk_bytes` each); an over-long line becomes a Drop."""
    lines: list[bytes] = []
    size = 0
    first = 1
    line_no = 0
    while True:
        line = fh.readline(-1 if max_line is None else max_line + 1)
        if not line:
            break
        line_no += 1
        too_long = max_line is not None and len(line.rstrip(b"\n")) > max_line
        if too_long or (fh.truncated and not line.endswith(b"\n")):
            if lines:  # the run so far, so line numbers stay exact
                yield RawDoc(src, "jsonl", b"".join(lines), first)
            lines, size, first = [], 0, line_no + 1
            if too_long:
                _skip_line(fh, line)
                yield Drop(f"{src}:{line_no}", "line_too_long")
            continue  # else: the cap cut this line; the file is counted as file_truncated
        lines.append(line)
        size += len(line)
        if size >= chunk_bytes:
            yield RawDoc(src, "jsonl", b"".join(lines), first)
            lines, size, first = [], 0, line_no + 1
    if lines:
        yield RawDoc(src, "jsonl", b"".join(lines), first)


def _skip_line(fh: _Capped, head: bytes) -> None:
    """Read past the rest of a line whose first bytes were `head`, in bounded pieces."""
    piece = head
    while piece and not piece.endswith(b"\n"):
        piece = fh.readline(_SKIP_CHUNK)
