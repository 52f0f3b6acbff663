"""Train the BPE tokenizer in a child process, on one thread.

Why a child: with its thread pool the `tokenizers` trainer's resident memory grows
with the amount of text (allocator arenas: peak RSS 143 → 224 MB for 1× → 4× the
stdlib corpus at vocab 8192); single-threaded in the calling process it stayed flat
(112 → 115 MB; the child's own figures, which depend on how the texts reach it, are in
`train_tokenizer_in_subprocess`). The library's only switch for its threads is the
`TOKENIZERS_PARALLELISM` environment variable, read on every call; changing it here would
change it for the whole calling process (other threads, later encodes that should use
every core). A
child started with its own environment gets one thread without touching ours, and
whatever the trainer allocated goes back to the OS when the child exits.

Protocol over the child's stdin: each document as an 8-byte little-endian length
and its UTF-8 bytes, then `_END`; the child prints the tokenizer JSON on stdout.
Its stderr goes to a temporary file, so a chatty child can never block on a full
pipe while we are still writing.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO

from tokenizers import Tokenizer

from clusterlm.data.tokenizer import MAX_PIECE_CHARS, train_tokenizer
from clusterlm.errors import DataError

_LEN = struct.Struct("<Q")
_END = 2**64 - 1


def train_tokenizer_in_subprocess(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    max_piece_chars: int = MAX_PIECE_CHARS,
) -> Tokenizer:
    """`train_tokenizer` on `texts`, run single-threaded in a child process.

    The texts are streamed to the child as they come (memory here stays flat).
    DataError if the child fails (e.g. killed for lack of memory).
    """
    env = {
        # glibc: allocations over 128 KB (whole documents on their way to the trainer) get their
        # own mappings, returned when freed, instead of growing the heap for good; without it
        # the child's peak RSS grows with the text (89 -> 130 MB for 1x -> 4x the default
        # corpus), with it much less (89 -> 98 MB). Other C libraries ignore the variable.
        "MALLOC_MMAP_THRESHOLD_": "131072",
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    argv = [sys.executable, "-m", "clusterlm.data.bpe_process", str(vocab_size), str(min_frequency),
            str(max_piece_chars)]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, env=env)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            try:
                for text in texts:
                    data = text.encode("utf-8")
                    proc.stdin.write(_LEN.pack(len(data)))
                    proc.stdin.write(data)
                proc.stdin.write(_LEN.pack(_END))
                proc.stdin.close()
            except BrokenPipeError:
                pass  # the child died; its exit status and stderr say why
            result = proc.stdout.read()
            code = proc.wait()
        finally:
            if proc.poll() is None:  # we are being interrupted: do not leave it training
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except BrokenPipeError:  # unflushed input for a child that is gone
                    pass
        if code != 0:
            errors.seek(0)
            lines = errors.read().decode("utf-8", "replace").strip().splitlines()
            why = lines[-1] if lines else (f"killed by signal {-code} (out of memory?)" if code < 0 else "")
            raise DataError(f"tokenizer training failed (exit status {code}): {why}; "
                            "lower data.tokenizer_sample_mb if memory ran out")
    return Tokenizer.from_str(result.decode("utf-8"))


def _received(stream: IO[bytes]) -> Iterator[str]:
    while True:
        (size,) = _LEN.unpack(stream.read(_LEN.size))
        if size == _END:
            return
        yield stream.read(size).decode("utf-8")


def _main(argv: list[str]) -> None:
    vocab_size, min_frequency, max_piece_chars = (int(a) for a in argv)
    tok = train_tokenizer(_received(sys.stdin.buffer), vocab_size, min_frequency=min_frequency,
                          max_piece_chars=max_piece_chars)
    sys.stdout.buffer.write(tok.to_str().encode("utf-8"))


if __name__ == "__main__":
    _main(sys.argv[1:])
