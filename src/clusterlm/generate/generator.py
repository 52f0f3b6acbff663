"""Autoregressive generation that streams: token ids, or text pieces, as soon as they exist.

    prompt ids ──prefill──▶ logits ──sample──▶ id ──(stop at EOS)──▶ yield ──decode step──▶ …

With the cache the prompt is processed once and each later step feeds only the newest token;
without it (`use_kv_cache=False`) every step re-runs the whole window. Both paths see exactly
the same window of tokens, so at temperature 0 they produce the same text.

Context: a Transformer attends to at most `max_seq_len` positions. A prompt longer than
that is cropped to its last `max_seq_len` tokens, and when generation fills the window it
slides: the oldest tokens are dropped so the newest half-window remains, and (with a cache)
that half is re-prefilled once. Recurrent models have no window and simply carry their state.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from clusterlm.errors import UsageError
from clusterlm.generate.kv_cache import new_cache
from clusterlm.generate.sampling import SamplingSettings, sample_next


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 128
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    seed: int | None = None  # None: a fresh random seed
    use_kv_cache: bool = True
    eos_id: int | None = None  # stop (without emitting it) when this id is sampled

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise UsageError(f"max-new-tokens must be ≥ 0, got {self.max_new_tokens}")


def context_limit(model: nn.Module) -> int | None:
    """Positions the model can attend to at once (None: unbounded, recurrent)."""
    cfg = model.config
    return cfg.max_seq_len if cfg.is_transformer else None


@torch.inference_mode()
def generate_ids(model: nn.Module, prompt_ids: Sequence[int], settings: GenerationSettings) -> Iterator[int]:
    """Yield new token ids one by one (EOS excluded). `model` must be in eval mode."""
    if len(prompt_ids) == 0:
        raise UsageError("the prompt is empty (it encodes to no tokens)")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if settings.seed is None:
        generator.seed()
    else:
        generator.manual_seed(settings.seed)
    limit = context_limit(model)
    keep = max(1, limit // 2) if limit else 0  # tokens kept when the window slides
    tokens = list(prompt_ids)
    start = max(0, len(tokens) - limit) if limit else 0  # first token inside the window
    cache = new_cache(model) if settings.use_kv_cache else None
    cached = 0  # tokens[start : start + cached] are in the cache, at positions 0 … cached − 1

    for _ in range(settings.max_new_tokens):
        if limit and len(tokens) - start > limit:
            start, cached = len(tokens) - keep, 0  # slide; the cache is refilled from position 0
            if cache is not None:
                cache = new_cache(model)
        if cache is not None:
            chunk = torch.tensor([tokens[start + cached:]], device=device)  # (1, T)
            logits = model(chunk, kv_cache=cache, start_pos=cached)[:, -1]  # (1, V)
            cached = len(tokens) - start
        else:
            window = torch.tensor([tokens[start:]], device=device)
            logits = model(window)[:, -1]
        next_id = int(sample_next(logits, settings.sampling, generator)[0])
        if settings.eos_id is not None and next_id == settings.eos_id:
            return
        tokens.append(next_id)
        yield next_id


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


def generate_text(model: nn.Module, tokenizer: Any, prompt: str, settings: GenerationSettings) -> Iterator[str]:
    """Yield decoded text pieces of the continuation of `prompt` as they are produced."""
    prompt_ids = tokenizer.encode(prompt).ids
    decoder = StreamDecoder(tokenizer, prompt_ids)
    for token_id in generate_ids(model, prompt_ids, settings):
        piece = decoder.push(token_id)
        if piece:
            yield piece
    tail = decoder.flush()
    if tail:
        yield tail
