"""Generation for one prompt, streaming: token ids, or text pieces, as soon as they exist.

    prompt ids ──prefill──▶ logits ──sample──▶ id ──(stop at EOS)──▶ yield ──decode step──▶ …

This is the single-caller face of `engine.DecodeEngine` (a batch of one), so `clusterlm
generate`, the quickstart's sample and a server request alone run exactly the same decode loop.

With the cache the prompt is processed once and each later step feeds only the newest token;
without it (`use_kv_cache=False`) every step re-runs the whole window. Both paths see exactly
the same window of tokens, so at temperature 0 they produce the same text.

Context: a Transformer attends to at most `max_seq_len` positions. A prompt longer than
that is cropped to its last `max_seq_len` tokens, and when generation fills the window it
slides: the oldest tokens are dropped so the newest half-window remains, and (with a cache)
that half is re-prefilled once. Recurrent models have no window and simply carry their state.
(The server refuses such requests instead: see clusterlm.serve.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn

from clusterlm.generate.engine import DecodeEngine, GenerationSettings, context_limit
from clusterlm.generate.text import StreamDecoder, TextAssembler, require_text

__all__ = ["GenerationSettings", "StreamDecoder", "TextStream", "context_limit", "generate_ids", "generate_text"]


def generate_ids(model: nn.Module, prompt_ids: Sequence[int], settings: GenerationSettings) -> Iterator[int]:
    """Yield new token ids one by one (EOS excluded). `model` must be in eval mode."""
    engine = DecodeEngine(model, max_batch=1, use_kv_cache=settings.use_kv_cache)
    seq = engine.add(prompt_ids, settings)
    while seq.finish_reason is None:
        for event in engine.step():
            if event.error is not None:
                raise event.error
            if event.token_id is not None:
                yield event.token_id


class TextStream:
    """The continuation of one prompt as text pieces (iterate once), with its token counts.

    `completion_tokens` and `finish_reason` ("stop": end of text or a stop string; "length":
    `max_new_tokens` reached) are final once the iteration ends.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, prompt: str, settings: GenerationSettings,
                 stops: Sequence[str] = ()):
        self.model, self.tokenizer, self.settings, self.stops = model, tokenizer, settings, stops
        self.prompt_ids: list[int] = tokenizer.encode(require_text(prompt, "the prompt")).ids
        self.completion_tokens = 0
        self.finish_reason = "length"

    @property
    def cropped_to(self) -> int | None:
        """The model's context when the prompt is longer (it sees only its last tokens), else None."""
        limit = context_limit(self.model)
        return limit if limit is not None and len(self.prompt_ids) > limit else None

    def __iter__(self) -> Iterator[str]:
        text = TextAssembler(self.tokenizer, self.prompt_ids, self.stops)
        for token_id in generate_ids(self.model, self.prompt_ids, self.settings):
            self.completion_tokens += 1
            piece = text.push(token_id)
            if piece:
                yield piece
            if text.stopped:
                self.finish_reason = "stop"
                return  # closing generate_ids here stops the model mid-budget
        # generate_ids ends early only when it samples end-of-text (which it does not emit)
        if self.completion_tokens < self.settings.max_new_tokens:
            self.finish_reason = "stop"
        tail = text.finish()
        if text.stopped:
            self.finish_reason = "stop"
        if tail:
            yield tail


def generate_text(model: nn.Module, tokenizer: Any, prompt: str, settings: GenerationSettings) -> TextStream:
    """The decoded text pieces of the continuation of `prompt`, as they are produced."""
    return TextStream(model, tokenizer, prompt, settings)
