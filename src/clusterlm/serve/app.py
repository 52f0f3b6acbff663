"""The HTTP app: a subset of OpenAI's completions API in front of one loaded model.

    GET  /health           liveness, and which model is loaded
    GET  /v1/models        OpenAI's model list (one entry)
    POST /v1/completions   text completion, whole (JSON) or streamed (server-sent events)

`create_app` closes over the model, so there is no global state and tests can build as
many apps as they like. Endpoints are plain `def`s: FastAPI runs them (and the iterator
of a streaming response) in its thread pool, so a long generation never blocks the event
loop. One model cannot run two generations at once (and would gain nothing from it on one
device without batching), so a lock serialises them; requests queue in arrival order.

Errors use OpenAI's shape, `{"error": {"message", "type", "param"}}`, with status 400 for
any bad request (FastAPI's default would be 422 with a differently shaped body), because
OpenAI clients read `error.message`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from torch import nn

from clusterlm import __version__
from clusterlm.errors import ClusterLMError, UsageError
from clusterlm.generate.generator import GenerationSettings, context_limit
from clusterlm.generate.sampling import SamplingSettings
from clusterlm.serve.completion import CompletionStats, complete

DEFAULT_MAX_TOKENS = 64


class CompletionRequest(BaseModel):
    """The fields of OpenAI's `POST /v1/completions` that this server honours; others are ignored."""

    model: str | None = None  # one model per server: accepted whatever it names
    prompt: str
    max_tokens: int | None = Field(None, ge=1)  # None: 64, or the server's limit if lower
    temperature: float = Field(1.0, ge=0.0)  # 0 = greedy
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param}}
    return JSONResponse(body, status_code=status)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """Pydantic's first complaint as one line naming the field: 'max_tokens: Input should be …'."""
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return "the request body is not valid JSON", None
    loc = [part for part in first.get("loc", ()) if part != "body"]
    field = str(loc[0]) if loc else None  # the request field; deeper parts name union branches
    return f"{field or 'request body'}: {first['msg']}", field


def create_app(model: nn.Module, tokenizer: Any, *, model_name: str, eos_id: int | None,
               max_new_tokens_limit: int) -> FastAPI:
    """An app serving `model` (in eval mode); a request may ask for ≤ `max_new_tokens_limit` new tokens."""
    if max_new_tokens_limit < 1:
        raise UsageError(f"max-new-tokens-limit must be ≥ 1, got {max_new_tokens_limit}")
    app = FastAPI(title="clusterlm", version=__version__)
    lock = threading.Lock()
    model_card = {
        "id": model_name, "object": "model", "created": int(time.time()), "owned_by": "clusterlm",
        "params": sum(p.numel() for p in model.parameters()),
        "max_seq_len": context_limit(model),  # None: a recurrent model, no window
    }

    @app.exception_handler(RequestValidationError)
    def _bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, *_validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card]}

    def settings_for(request: CompletionRequest) -> GenerationSettings:
        max_tokens = request.max_tokens
        if max_tokens is None:
            max_tokens = min(DEFAULT_MAX_TOKENS, max_new_tokens_limit)
        if max_tokens > max_new_tokens_limit:
            raise HTTPException(400, f"max_tokens must be ≤ {max_new_tokens_limit} (this server's limit), "
                                     f"got {max_tokens}")
        try:
            sampling = SamplingSettings(temperature=request.temperature, top_k=request.top_k, top_p=request.top_p)
            return GenerationSettings(max_new_tokens=max_tokens, sampling=sampling, seed=request.seed,
                                      eos_id=eos_id)
        except ClusterLMError as exc:  # the generator's own checks, in case they are stricter
            raise HTTPException(400, str(exc)) from None

    def locked(pieces: Iterator[str]) -> Iterator[str]:
        # Holding the lock inside the iterator covers a streamed response for as long as it
        # is being produced; closing the iterator early (see `background` below) releases it.
        with lock:
            yield from pieces

    @app.post("/v1/completions", response_model=None)
    def completions(request: CompletionRequest) -> dict[str, Any] | StreamingResponse:
        if not request.prompt:
            raise HTTPException(400, "prompt is empty; send the text to continue")
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        if "" in stops:
            raise HTTPException(400, "stop strings must not be empty")
        settings = settings_for(request)
        prompt_ids = tokenizer.encode(request.prompt).ids
        if not prompt_ids:
            raise HTTPException(400, "the prompt encodes to no tokens")
        stats = CompletionStats(prompt_tokens=len(prompt_ids))
        pieces = locked(complete(model, tokenizer, prompt_ids, settings, stops, stats))
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": model_name}

        def usage() -> dict[str, int]:
            return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
                    "total_tokens": stats.prompt_tokens + stats.completion_tokens}

        if not request.stream:
            text = "".join(pieces)
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": stats.finish_reason}
            return {**head, "choices": [choice], "usage": usage()}

        def events() -> Iterator[str]:
            for piece in pieces:
                choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": None}
                yield f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"
            # The last chunk carries the finish reason and, beyond OpenAI's format, the usage.
            choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": stats.finish_reason}
            yield f"data: {json.dumps({**head, 'choices': [choice], 'usage': usage()})}\n\n"
            yield "data: [DONE]\n\n"

        # When the client disconnects, Starlette stops pulling pieces but leaves the iterator
        # suspended, lock held, until garbage collection finds it (it sits in a reference
        # cycle, so that can take long enough to stall every later request). The background
        # task runs once the response ends, disconnected or not, and closes it at once.
        return StreamingResponse(events(), media_type="text/event-stream", background=BackgroundTask(pieces.close),
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app
