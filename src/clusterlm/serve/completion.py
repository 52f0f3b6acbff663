"""One completion as a stream of text pieces, with stop strings, finish reason and token counts.

This is the server's only generation logic, and it is thin: token ids come from
`generate_ids` and text from `StreamDecoder`, exactly as `clusterlm generate` does, so
without stop strings the pieces concatenate to what `generate_text` yields. Streaming and
non-streaming responses both consume this one iterator, so they cannot disagree.

Stop strings are matched on the decoded text, not on tokens (a stop string may span several
tokens, or end mid-token). Text that could still turn out to be the start of a stop string
is held back until the next token decides it, so a streamed stop string is never half sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from clusterlm.generate.generator import GenerationSettings, StreamDecoder, generate_ids


@dataclass
class CompletionStats:
    """Filled in while the pieces are consumed; final once the iterator is exhausted."""

    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: str = "length"  # "stop": end of text or a stop string; "length": max_tokens reached


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


def complete(model: nn.Module, tokenizer: Any, prompt_ids: Sequence[int], settings: GenerationSettings,
             stops: Sequence[str], stats: CompletionStats) -> Iterator[str]:
    """Yield the continuation of `prompt_ids` piece by piece, ending before the first stop string."""
    decoder = StreamDecoder(tokenizer, prompt_ids)
    pending = ""  # decoded, not yet yielded: its tail may be the start of a stop string
    for token_id in generate_ids(model, prompt_ids, settings):
        stats.completion_tokens += 1
        pending += decoder.push(token_id)
        cut = first_stop(pending, stops)
        if cut >= 0:
            stats.finish_reason = "stop"
            if cut:
                yield pending[:cut]
            return  # closing generate_ids here stops the model mid-budget
        ready = len(pending) - partial_stop_length(pending, stops)
        if ready:
            yield pending[:ready]
            pending = pending[ready:]
    # generate_ids ends early only when it samples end-of-text (which it does not emit)
    if stats.completion_tokens < settings.max_new_tokens:
        stats.finish_reason = "stop"
    pending += decoder.flush()
    cut = first_stop(pending, stops)
    if cut >= 0:
        stats.finish_reason = "stop"
        pending = pending[:cut]
    if pending:
        yield pending
