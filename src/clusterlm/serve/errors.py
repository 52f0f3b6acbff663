"""OpenAI-shaped errors, bearer-token authentication and the request-body size limit.

Every failure a client can cause is a 4xx with OpenAI's body,

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": null}}

because OpenAI clients read `error.message` (the `openai` package raises `BadRequestError`,
`AuthenticationError`, `NotFoundError`, … from the status). Nothing a request carries may
produce a 500 or a plain-text body: unexpected exceptions become a JSON 500 "server_error" and
the server keeps serving.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("clusterlm.serve")


class ApiError(Exception):
    """A request the server refuses, with what OpenAI would answer."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def internal_error(exc: BaseException) -> ApiError:
    """What a client is told about a failure that is the server's own (details go to the log)."""
    return ApiError(500, f"the server failed while generating ({type(exc).__name__}); see its log",
                    type="server_error")


def validation_error(exc: ValidationError) -> ApiError:
    """Pydantic's first complaint as one line naming the field: 'max_tokens: Input should be …'."""
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON ({first['msg']})")
    # loc is e.g. ("messages", 0, "content") or ("prompt", "list[int]", 1): keep field names and
    # indexes, drop the names pydantic gives union branches.
    path = [str(p) for p in first.get("loc", ()) if isinstance(p, int) or (str(p).isidentifier()
                                                                           and p not in _UNION_TAGS)]
    where = ".".join(path) or "request body"
    return ApiError(400, f"{where}: {first['msg']}", param=path[0] if path else None)


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "is_instance"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)  # unknown path (404), wrong method (405), …
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return ApiError(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}", code=code).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return internal_error(exc).response()


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `max_bytes` (never buffered whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(int(declared), max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(None, max_bytes)
    return bytes(body)


def _too_large(size: int | None, max_bytes: int) -> ApiError:
    got = f" ({size:,} bytes)" if size is not None else ""
    return ApiError(413, f"the request body{got} is larger than this server's limit of {max_bytes:,} bytes "
                         f"(clusterlm serve --max-body-bytes)", code="request_too_large")


class BearerAuth:
    """ASGI middleware: every HTTP request must carry `Authorization: Bearer <api key>`, else 401.

    It wraps the whole app, so unknown paths are refused too (nothing is revealed unauthenticated).
    The comparison takes the same time whatever the key's prefix (hmac.compare_digest).
    """

    def __init__(self, app: ASGIApp, api_key: str):
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                message = ("no API key given: send the header 'Authorization: Bearer <key>'" if not given
                           else "incorrect API key")
                response = ApiError(401, message, code="invalid_api_key").response()
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

