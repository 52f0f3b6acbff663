"""OpenAI's response bodies for both endpoints: whole responses, stream chunks, logprobs, usage.

    /v1/completions        "text_completion"         choices[i].text
    /v1/chat/completions   "chat.completion"          choices[i].message {role, content}
                           "chat.completion.chunk"    choices[i].delta   {role?, content?}

Streams: every chunk has the same `id` and `created`; the chunk that finishes the last choice
also carries `usage` (an addition to OpenAI's format, so plain `curl` users see the counts),
and with `stream_options.include_usage` a final chunk with no choices and the `usage` follows,
as OpenAI sends it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from clusterlm.serve.completion import Choice, Delta, TokenLogprob


def usage(choices: Sequence[Choice]) -> dict[str, int]:
    """Prompt tokens once per prompt (choices of one prompt share it, as OpenAI counts them)."""
    prompt_tokens = sum(len(p) for p in {id(c.prompt_ids): c.prompt_ids for c in choices}.values())
    completion_tokens = sum(c.completion_tokens for c in choices)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(payload: dict[str, Any] | str) -> str:
    """One server-sent event."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


class ResponseFormat:
    """Builds one request's response or chunks; `chat` picks the endpoint's shape."""

    def __init__(self, chat: bool, model_name: str, tokenizer: Any, logprobs: bool):
        self.chat, self.tokenizer, self.logprobs = chat, tokenizer, logprobs
        prefix = "chatcmpl" if chat else "cmpl"
        self.head = {"id": f"{prefix}-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}

    def whole(self, choices: Sequence[Choice], texts: dict[int, str],
              logprobs: dict[int, list[TokenLogprob]]) -> dict[str, Any]:
        out = []
        for c in choices:
            body: dict[str, Any] = {"index": c.index}
            if self.chat:
                body["message"] = {"role": "assistant", "content": texts.get(c.index, "")}
            else:
                body["text"] = texts.get(c.index, "")
            body["logprobs"] = self._logprobs(logprobs.get(c.index, []))
            body["finish_reason"] = c.finish_reason
            out.append(body)
        kind = "chat.completion" if self.chat else "text_completion"
        return {**self.head, "object": kind, "choices": out, "usage": usage(choices)}

    def chunk(self, delta: Delta, first: bool = False, counts: dict[str, int] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"index": delta.index}
        if self.chat:
            body["delta"] = ({"role": "assistant", "content": ""} if first
                             else {"content": delta.text} if delta.text else {})
        else:
            body["text"] = delta.text
        body["logprobs"] = self._logprobs(delta.logprobs)
        body["finish_reason"] = delta.finish_reason
        out = {**self.head, "object": self._chunk_kind(), "choices": [body]}
        if counts is not None:
            out["usage"] = counts
        return out

    def usage_chunk(self, counts: dict[str, int]) -> dict[str, Any]:
        return {**self.head, "object": self._chunk_kind(), "choices": [], "usage": counts}

    def _chunk_kind(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def _token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def _top_by_text(self, top: list[tuple[int, float]]) -> dict[str, float]:
        """OpenAI's completions shape keys alternatives by their text; tokens that decode alike (byte
        pieces of one character all show as U+FFFD) keep the likeliest one's logprob."""
        out: dict[str, float] = {}
        for token_id, logprob in top:  # most likely first
            out.setdefault(self._token(token_id), logprob)
        return out

    def _logprobs(self, entries: list[TokenLogprob]) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        if self.chat:  # {"content": [{token, logprob, bytes, top_logprobs: [...]}, …]}
            def item(token_id: int, logprob: float) -> dict[str, Any]:
                text = self._token(token_id)
                return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}
            return {"content": [{**item(e.token_id, e.logprob), "top_logprobs": [item(i, lp) for i, lp in e.top]}
                                for e in entries]}
        return {"tokens": [self._token(e.token_id) for e in entries],
                "token_logprobs": [e.logprob for e in entries],
                "top_logprobs": [self._top_by_text(e.top) for e in entries],
                "text_offset": [e.text_offset for e in entries]}
