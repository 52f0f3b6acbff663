"""The request bodies this server accepts: OpenAI's completions and chat completions, typed.

Parsing is strict (a string is not a number, `true` is not 1, NaN and Infinity are refused),
ranges are OpenAI's, and every complaint names the field. Fields OpenAI defines for features
this server does not have (`echo`, `best_of`, `logit_bias`, penalties, tools, …) are refused
with a 400 when set to anything but their neutral value — silently ignoring them would return
something the client did not ask for. Other unknown fields (`user`, `metadata`, …) are ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clusterlm.generate.engine import SEED_MAX, SEED_MIN
from clusterlm.generate.sampling import MIN_TEMPERATURE
from clusterlm.serve.errors import ApiError, validation_error

MAX_N = 16  # choices per prompt
MAX_STOPS = 16
MAX_STOP_CHARS = 256


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class StreamOptions(_Strict):
    include_usage: bool = False


class _Generation(_Strict):
    """What both endpoints share."""

    model: str | None = None  # None: the served model (OpenAI requires it; curl users forget it)
    max_tokens: int | None = Field(None, ge=1)  # None: as much as the context and server allow
    temperature: float = Field(1.0, ge=0.0, le=2.0)  # 0 = greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)  # not OpenAI's; vLLM and others accept it
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = Field(None, validate_default=True)  # → a list
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Refused unless neutral (see `unsupported()`).
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None

    @field_validator("temperature")
    @classmethod
    def _usable_temperature(cls, t: float) -> float:
        if 0.0 < t < MIN_TEMPERATURE:  # scaled logits would overflow: greedy is what was meant
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, got {t}")
        return t

    @field_validator("stop")
    @classmethod
    def _usable_stops(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if "" in stops:
            raise ValueError("stop strings must not be empty")
        if len(stops) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"at most {MAX_STOPS} stop strings of at most {MAX_STOP_CHARS} characters")
        return stops

    def unsupported(self) -> dict[str, bool]:
        return {"presence_penalty": bool(self.presence_penalty), "frequency_penalty": bool(self.frequency_penalty),
                "logit_bias": bool(self.logit_bias)}


class CompletionRequest(_Generation):
    """`POST /v1/completions`."""

    prompt: str | list[str] | list[int] | list[list[int]]  # text, texts, token ids, lists of token ids
    logprobs: int | None = Field(None, ge=0, le=5)  # the top alternatives per token (0: only the chosen)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def unsupported(self) -> dict[str, bool]:
        return {**super().unsupported(), "echo": self.echo, "best_of": self.best_of not in (None, 1),
                "suffix": bool(self.suffix)}


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: str
    content: str | list[TextPart] | None = None
    tool_calls: list[Any] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(_Generation):
    """`POST /v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name for max_tokens
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> dict[str, bool]:
        return {**super().unsupported(), "tools": bool(self.tools), "functions": bool(self.functions),
                "tool_choice": self.tool_choice not in (None, "none", "auto"),
                "response_format": (self.response_format or {}).get("type", "text") != "text",
                "messages.tool_calls": any(m.tool_calls for m in self.messages)}


def parse(body: bytes, schema: type[_Generation]) -> Any:
    """A validated request, or an ApiError (400) naming the field and what is wrong with it."""
    try:
        request = schema.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    refused = [name for name, is_set in request.unsupported().items() if is_set]
    if refused:
        raise ApiError(400, f"{refused[0]} is not supported by this server; leave it out", param=refused[0])
    return request
