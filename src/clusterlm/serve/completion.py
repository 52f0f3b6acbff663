"""One request's choices: from a validated request to per-choice text deltas, on the shared engine.

`prepare_choices` turns prompts (already token ids) and the sampling fields into one
`Choice` per generated sequence, enforcing the limits: the prompt must fit the model's context
with room for `max_tokens` more (a 400 that gives the numbers; nothing is ever cropped), and
`max_tokens` must not exceed the server's limit. `stream_choices` submits them to the scheduler
and turns the token events coming back into text with `TextAssembler` — the same
detokenisation and stop-string logic as `clusterlm generate`, so streaming and non-streaming
responses, and the CLI, cannot disagree. A choice that reaches a stop string is cancelled at
once (its batch row goes to the next request); if the consumer goes away (the client hung up),
every unfinished choice is cancelled on the way out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from clusterlm.generate.engine import SEED_MAX, GenerationSettings, TokenEvent
from clusterlm.generate.sampling import SamplingSettings
from clusterlm.generate.text import TextAssembler
from clusterlm.serve.errors import ApiError
from clusterlm.serve.scheduler import Scheduler, Ticket

DEFAULT_COMPLETION_TOKENS = 64  # /v1/completions without max_tokens (chat: up to the context)


@dataclass(frozen=True)
class Limits:
    context: int | None  # the model's window (None: a recurrent model, unbounded)
    max_new_tokens: int  # --max-new-tokens-limit
    vocab_size: int


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]
    text_offset: int  # where this token's text starts in the choice's text


@dataclass
class Choice:
    index: int
    prompt_ids: list[int]
    settings: GenerationSettings
    text: TextAssembler
    completion_tokens: int = 0
    emitted_chars: int = 0
    finish_reason: str | None = None
    ticket: Ticket | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # not yet handed out


@dataclass
class Delta:
    """New text of one choice (possibly empty), the log-probabilities of the tokens behind it,
    and, on its last delta, why it finished."""

    index: int
    text: str
    logprobs: list[TokenLogprob]
    finish_reason: str | None


def check_prompt(prompt_ids: list[int], limits: Limits, param: str = "prompt") -> None:
    if not prompt_ids:
        raise ApiError(400, f"{param} is empty (it encodes to no tokens); send the text to continue", param=param)
    if any(not 0 <= i < limits.vocab_size for i in prompt_ids):
        raise ApiError(400, f"{param} holds token ids outside this model's vocabulary (0 … {limits.vocab_size - 1})",
                       param=param)
    if limits.context is not None and len(prompt_ids) >= limits.context:
        raise ApiError(400, f"this model's maximum context length is {limits.context} tokens, and the {param} has "
                            f"{len(prompt_ids)}: shorten it to at most {limits.context - 1} to leave room for a reply",
                       param=param, code="context_length_exceeded")


def resolve_max_tokens(asked: int | None, prompt_tokens: int, limits: Limits, default: int | None) -> int:
    """max_tokens checked against the server's limit and the room the context leaves after the prompt."""
    room = limits.max_new_tokens if limits.context is None else min(limits.max_new_tokens,
                                                                     limits.context - prompt_tokens)
    if asked is None:
        return min(default, room) if default is not None else room
    if asked > limits.max_new_tokens:
        raise ApiError(400, f"max_tokens must be ≤ {limits.max_new_tokens} (this server's limit), got {asked}",
                       param="max_tokens")
    if limits.context is not None and prompt_tokens + asked > limits.context:
        raise ApiError(400, f"this model's maximum context length is {limits.context} tokens; you asked for "
                            f"{prompt_tokens + asked} ({prompt_tokens} in the prompt, {asked} for the completion): "
                            f"lower max_tokens to at most {room} or shorten the prompt",
                       param="max_tokens", code="context_length_exceeded")
    return asked


def prepare_choices(prompts: Sequence[list[int]], request: Any, max_tokens: list[int], eos_id: int | None,
                    tokenizer: Any, stops: Sequence[str]) -> list[Choice]:
    """`n` choices per prompt, index = prompt × n + j; choice j > 0 samples with seed + j."""
    sampling = SamplingSettings(temperature=request.temperature, top_k=request.top_k,
                                top_p=request.top_p if request.top_p < 1.0 else None)
    choices = []
    for p, prompt_ids in enumerate(prompts):
        for j in range(request.n):
            seed = None if request.seed is None else (request.seed if j == 0 else (request.seed + j) % (SEED_MAX + 1))
            settings = GenerationSettings(max_new_tokens=max_tokens[p], sampling=sampling, seed=seed, eos_id=eos_id)
            choices.append(Choice(len(choices), prompt_ids, settings, TextAssembler(tokenizer, prompt_ids, stops)))
    return choices


async def stream_choices(scheduler: Scheduler, choices: list[Choice],
                         top_logprobs: int | None) -> AsyncIterator[Delta]:
    """Run every choice on the shared engine; yield deltas as tokens arrive, until all are finished.

    Raises RuntimeError if the engine failed on a choice (the caller reports a server error).
    """
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[Choice, TokenEvent]] = asyncio.Queue()
    for choice in choices:
        def deliver(event: TokenEvent, choice: Choice = choice) -> None:  # on the decode thread
            loop.call_soon_threadsafe(events.put_nowait, (choice, event))
        choice.ticket = scheduler.submit(choice.prompt_ids, choice.settings, top_logprobs, deliver)
    try:
        unfinished = len(choices)
        while unfinished:
            choice, event = await events.get()
            if choice.finish_reason is not None:
                continue  # already ended at a stop string; late events are moot
            delta = _apply(choice, event)
            if choice.finish_reason is not None:
                unfinished -= 1
                if choice.text.stopped:  # ended here, at a stop string: free its row at once
                    scheduler.cancel(choice.ticket)
            if delta.text or delta.finish_reason:
                yield delta
    finally:
        release_choices(scheduler, choices)  # the consumer left early: free every slot still held


def release_choices(scheduler: Scheduler, choices: list[Choice]) -> None:
    """Cancel every choice still running (idempotent)."""
    for choice in choices:
        if choice.finish_reason is None and choice.ticket is not None:
            scheduler.cancel(choice.ticket)


def _apply(choice: Choice, event: TokenEvent) -> Delta:
    if event.error is not None:
        choice.finish_reason = "error"
        raise RuntimeError(f"generation failed: {event.error!r}") from event.error
    text = ""
    if event.token_id is not None:
        choice.completion_tokens += 1
        offset = choice.emitted_chars + len(choice.text.pending)
        text = choice.text.push(event.token_id)
        if event.logprob is not None:
            choice.logprobs.append(TokenLogprob(event.token_id, event.logprob, event.top_logprobs or [], offset))
        if choice.text.stopped:
            choice.finish_reason = "stop"
    if choice.finish_reason is None and event.finish_reason is not None:
        text += choice.text.finish()
        choice.finish_reason = "stop" if choice.text.stopped else event.finish_reason
    choice.emitted_chars += len(text)
    logprobs, choice.logprobs = (choice.logprobs, []) if text or choice.finish_reason else ([], choice.logprobs)
    return Delta(choice.index, text, logprobs, choice.finish_reason)
