"""The HTTP app: OpenAI's completions and chat completions API in front of one loaded model.

    GET  /health                liveness, and which model is loaded
    GET  /v1/models             OpenAI's model list (one entry); /v1/models/{id} for that entry
    POST /v1/completions        text completion, whole (JSON) or streamed (server-sent events)
    POST /v1/chat/completions   chat, with the template of clusterlm.data.chat

`create_app` closes over the model, so there is no global state and tests can build as many
apps as they like. Endpoints are `async`: they parse and validate on the event loop (prompts
are tokenised in the thread pool, so a 1 MB prompt does not stall other clients), hand the
sequences to the `Scheduler`'s decode thread, and await their tokens. All requests share that
thread's batch (continuous batching, see clusterlm.generate.engine), so one long request never
blocks another, and `max_batch=1` turns batching off.

A streamed response that fails midway cannot change its status any more: it ends with an
OpenAI-shaped `data: {"error": …}` event and `data: [DONE]`, never an empty 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send
from torch import nn

from clusterlm import __version__
from clusterlm.data.chat import REPLY_STOPS, render_chat
from clusterlm.errors import UsageError
from clusterlm.generate.engine import context_limit
from clusterlm.serve.completion import (DEFAULT_COMPLETION_TOKENS, Choice, Delta, Limits, check_prompt, prepare_choices,
                                        release_choices, resolve_max_tokens, stream_choices)
from clusterlm.serve.errors import ApiError, BearerAuth, install_error_handlers, internal_error, read_body
from clusterlm.serve.protocol import ChatCompletionRequest, CompletionRequest, parse
from clusterlm.serve.responses import ResponseFormat, sse, usage
from clusterlm.serve.scheduler import Scheduler

log = logging.getLogger("clusterlm.serve")
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_CHOICES = 64  # prompts × n in one request


def create_app(model: nn.Module, tokenizer: Any, *, model_name: str, eos_id: int | None,
               max_new_tokens_limit: int, max_batch: int = 16, api_key: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """An app serving `model` (in eval mode) to up to `max_batch` sequences at once."""
    for name, value in (("max-new-tokens-limit", max_new_tokens_limit), ("max-batch", max_batch),
                        ("max-body-bytes", max_body_bytes)):
        if value < 1:
            raise UsageError(f"{name} must be ≥ 1, got {value}")
    endpoints = Endpoints(model, tokenizer, model_name, eos_id, max_new_tokens_limit, max_batch, max_body_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        endpoints.scheduler.start()
        yield
        endpoints.scheduler.stop()

    app = FastAPI(title="clusterlm", version=__version__, lifespan=lifespan)
    app.state.scheduler = endpoints.scheduler
    install_error_handlers(app)
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key)
    app.add_api_route("/health", endpoints.health, methods=["GET"])
    app.add_api_route("/v1/models", endpoints.models, methods=["GET"])
    app.add_api_route("/v1/models/{name:path}", endpoints.model_info, methods=["GET"])
    app.add_api_route("/v1/completions", endpoints.completions, methods=["POST"], response_model=None)
    app.add_api_route("/v1/chat/completions", endpoints.chat_completions, methods=["POST"], response_model=None)
    return app


class Endpoints:
    """The routes' handlers, sharing one model, tokenizer and scheduler."""

    def __init__(self, model: nn.Module, tokenizer: Any, model_name: str, eos_id: int | None,
                 max_new_tokens_limit: int, max_batch: int, max_body_bytes: int):
        self.tokenizer, self.model_name, self.eos_id, self.max_body_bytes = tokenizer, model_name, eos_id, max_body_bytes
        self.scheduler = Scheduler(model, max_batch)
        self.limits = Limits(context_limit(model), max_new_tokens_limit, model.config.require_vocab())
        self.model_card = {
            "id": model_name, "object": "model", "created": int(time.time()), "owned_by": "clusterlm",
            "params": sum(p.numel() for p in model.parameters()),
            "max_seq_len": self.limits.context,  # None: a recurrent model, no window
        }

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise ApiError(404, f"the model '{name}' does not exist; this server serves '{self.model_name}'",
                           param="model", code="model_not_found")

    def health(self) -> dict[str, str]:
        return {"status": "ok", "model": self.model_name}

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [self.model_card]}

    def model_info(self, name: str) -> dict[str, Any]:
        self.check_model(name)
        return self.model_card

    async def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids, computed in the thread pool (a 1 MB prompt takes a while)."""
        return await run_in_threadpool(lambda: [self.tokenizer.encode(text).ids for text in texts])

    async def completions(self, request: Request) -> Response:
        body = parse(await read_body(request, self.max_body_bytes), CompletionRequest)
        self.check_model(body.model)
        prompt = body.prompt
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], str)):
            prompts = await self.encode([prompt] if isinstance(prompt, str) else prompt)
        else:  # token ids: one list, or a list of lists
            prompts = [prompt] if not prompt or isinstance(prompt[0], int) else prompt
        if len(prompts) * body.n > MAX_CHOICES:
            raise ApiError(400, f"at most {MAX_CHOICES} choices per request (prompts × n), "
                                f"got {len(prompts)} × {body.n}", param="n")
        for p in prompts:
            check_prompt(p, self.limits)
        max_tokens = [resolve_max_tokens(body.max_tokens, len(p), self.limits, DEFAULT_COMPLETION_TOKENS)
                      for p in prompts]
        choices = prepare_choices(prompts, body, max_tokens, self.eos_id, self.tokenizer, body.stop)
        fmt = ResponseFormat(chat=False, model_name=self.model_name, tokenizer=self.tokenizer,
                             logprobs=body.logprobs is not None)
        return await self.respond(request, body, choices, fmt, body.logprobs)

    async def chat_completions(self, request: Request) -> Response:
        body = parse(await read_body(request, self.max_body_bytes), ChatCompletionRequest)
        self.check_model(body.model)
        try:
            text = render_chat([{"role": m.role, "content": m.text()} for m in body.messages])
        except ValueError as exc:  # an unknown role
            raise ApiError(400, f"messages: {exc}", param="messages") from None
        (prompt_ids,) = await self.encode([text])
        check_prompt(prompt_ids, self.limits, param="messages")
        asked = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        max_tokens = resolve_max_tokens(asked, len(prompt_ids), self.limits, default=None)
        choices = prepare_choices([prompt_ids], body, [max_tokens], self.eos_id, self.tokenizer,
                                  [*body.stop, *REPLY_STOPS])
        fmt = ResponseFormat(chat=True, model_name=self.model_name, tokenizer=self.tokenizer, logprobs=body.logprobs)
        return await self.respond(request, body, choices, fmt, (body.top_logprobs or 0) if body.logprobs else None)

    async def respond(self, request: Request, body: Any, choices: list[Choice], fmt: ResponseFormat,
                      top_logprobs: int | None) -> Response:
        """Run the choices; answer with a stream of events, or with one JSON body once all are done."""
        deltas = stream_choices(self.scheduler, choices, top_logprobs)
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return ReleasingStream(events(fmt, deltas, choices, include_usage),
                                   release=lambda: release_choices(self.scheduler, choices))
        texts: dict[int, str] = {}
        logprobs: dict[int, list] = {}

        async def collect() -> None:
            async for delta in deltas:
                texts[delta.index] = texts.get(delta.index, "") + delta.text
                logprobs.setdefault(delta.index, []).extend(delta.logprobs)

        try:
            finished = await until_disconnected(request, collect())
        except RuntimeError as exc:  # the engine failed on a choice
            log.error("generation failed: %s", exc)
            raise internal_error(exc) from None
        if not finished:  # the client hung up; its slots are already free
            return Response(status_code=499)
        return JSONResponse(fmt.whole(choices, texts, logprobs))


async def events(fmt: ResponseFormat, deltas: AsyncIterator[Any], choices: list[Choice],
                 include_usage: bool) -> AsyncIterator[str]:
    """The server-sent events of a streamed response; a failure ends it with an error event."""
    try:
        if fmt.chat:  # OpenAI opens each chat choice with the assistant role
            for c in choices:
                yield sse(fmt.chunk(Delta(c.index, "", [], None), first=True))
        unfinished = len(choices)
        async for delta in deltas:
            unfinished -= delta.finish_reason is not None
            yield sse(fmt.chunk(delta, counts=usage(choices) if unfinished == 0 else None))
        if include_usage:
            yield sse(fmt.usage_chunk(usage(choices)))
    except Exception as exc:  # noqa: BLE001 — the status is sent already: say it in the stream
        log.exception("a streamed generation failed")
        yield sse(internal_error(exc).body())
    yield sse("[DONE]")


async def until_disconnected(request: Request, work: Any) -> bool:
    """Run `work`; if the client disconnects first, cancel it. True when `work` finished."""
    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task, watcher = asyncio.ensure_future(work), asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()  # its stream_choices frees the slots on the way out
    if task in done:
        task.result()  # re-raise its failure
        return True
    return False


class ReleasingStream(StreamingResponse):
    """A stream that frees its batch slots however it ends: finished, failed, or the client gone.

    Starlette cancels the body iterator when the client disconnects, which runs its cleanup;
    this guard also covers servers that instead just stop iterating (ASGI spec 2.4).
    """

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None]):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()
