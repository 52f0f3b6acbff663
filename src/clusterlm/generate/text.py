"""Token ids in, text out: incremental detokenisation and stop strings.

`StreamDecoder` turns ids into text pieces without ever splitting a character; `TextAssembler`
adds stop strings on top. Both are per sequence and cheap, so the server runs them for each
request on its own side of the batch, and `clusterlm generate` runs the very same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clusterlm.errors import UsageError


def require_text(text: str, what: str) -> str:
    """`text` if it is valid Unicode; a lone surrogate (what undecodable bytes in a command-line
    argument become, or a JSON `\\ud800` escape) is a UsageError naming `what` and the position."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"{what} is not valid text: a lone surrogate {text[exc.start]!r} at character "
                         f"{exc.start} (bytes that are not UTF-8?); give it as UTF-8") from None
    return text


class StreamDecoder:
    """Incremental detokenisation that never splits a character.

    A byte-level BPE token can end in the middle of a multi-byte UTF-8 character, which
    decodes to U+FFFD until the next token completes it. So each step decodes a short
    trailing window, and text is released only once it no longer ends in U+FFFD (the same
    scheme as vLLM's detokenizer). Decoding with a few tokens of left context also keeps
    tokenizers that treat the first token specially (leading spaces) consistent.
    """

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self.ids = list(prompt_ids)
        self.prefix_offset = max(0, len(self.ids) - 5)
        self.read_offset = len(self.ids)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def push(self, token_id: int) -> str:
        """Add one token; return the newly completed text (possibly empty)."""
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix_offset:self.read_offset])
        after = self._decode(self.ids[self.prefix_offset:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character decodes as U+FFFD)."""
        before = self._decode(self.ids[self.prefix_offset:self.read_offset])
        after = self._decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return after[len(before):]


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in `text`, or -1."""
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return min(found, default=-1)


def partial_stop_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


class TextAssembler:
    """The text of one continuation, piece by piece, ending before the first stop string.

    Stop strings are matched on the decoded text, not on tokens (a stop string may span several
    tokens, or end mid-token). Text that could still turn out to be the start of a stop string
    is held back until the next token decides it, so a streamed stop string is never half sent.
    Once `stopped` is true, generation should end: nothing more will be released.
    """

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int], stops: Sequence[str] = ()):
        self.decoder = StreamDecoder(tokenizer, prompt_ids)
        self.stops = list(stops)
        self.pending = ""  # decoded, not yet released: its tail may be the start of a stop string
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text that is now certain (possibly empty)."""
        if self.stopped:
            return ""
        self.pending += self.decoder.push(token_id)
        return self._release(final=False)

    def finish(self) -> str:
        """Generation ended: release what was held back (cut at a stop string it completes)."""
        if self.stopped:
            return ""
        self.pending += self.decoder.flush()
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        cut = first_stop(self.pending, self.stops)
        if cut >= 0:
            self.stopped = True
            out, self.pending = self.pending[:cut], ""
            return out
        ready = len(self.pending) if final else len(self.pending) - partial_stop_length(self.pending, self.stops)
        out, self.pending = self.pending[:ready], self.pending[ready:]
        return out
