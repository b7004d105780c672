"""Every error the service answers is ``{"error": {"message", "type"}}`` with a 4xx (or 5xx for
the service's own trouble), never a traceback: handlers for FastAPI's and Starlette's exceptions,
the engine's ValueError/StoreError, and the request-body size cap (checked before parsing)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chronorag.store import StoreError
from chronorag.types import one_line

log = logging.getLogger("chronorag.api")

_TYPES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
          422: "validation_error", 429: "too_many_requests", 503: "unavailable", 504: "timeout"}


class ApiError(Exception):
    """An error answer: status, one-line message, machine-readable type, optional headers."""

    def __init__(self, status: int, message: str, type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = one_line(" ".join(str(message).split()))
        self.type = type or _TYPES.get(status, "error")
        self.headers = headers or {}


def error_body(message: str, type: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type}}


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.type), status_code=exc.status, headers=exc.headers)


def _where(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "request"


def validation_message(errors: list[dict[str, Any]]) -> tuple[int, str, str]:
    """(status, message, type) for pydantic errors: malformed JSON is 400, the rest 422."""
    if any(e.get("type") == "json_invalid" for e in errors):
        bad = next(e for e in errors if e.get("type") == "json_invalid")
        why = (bad.get("ctx") or {}).get("error", "JSON decode error")
        return 400, f"malformed JSON: {why}", "invalid_json"
    shown = [f"{_where(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "; ".join(shown) + more, "validation_error"


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, kind = validation_message(list(exc.errors()))
        return error_response(ApiError(status, message, kind))

    @app.exception_handler(ValidationError)  # a body validated by hand (documents, uploads)
    async def _pydantic(request: Request, exc: ValidationError) -> JSONResponse:
        status, message, kind = validation_message(list(exc.errors()))
        return error_response(ApiError(status, message, kind))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(ApiError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {})))

    @app.exception_handler(ValueError)
    async def _value(request: Request, exc: ValueError) -> JSONResponse:
        return error_response(ApiError(400, str(exc)))  # the engine's argument checks name the argument

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        log.error("store error: %s", exc)
        return error_response(ApiError(503, str(exc), "store_unavailable"))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal error (see the server log)", "internal_error"), status_code=500)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body is larger than the limit of {limit:,} bytes (api_max_body_mb)", "too_large")


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` once a body passes the cap: an HTTPException, so FastAPI's body
    parsing lets it through to the handlers instead of calling it a parse error."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit).message)


class BodyLimitMiddleware:
    """Refuses a declared Content-Length over the limit before anything reads the body, and caps
    what a chunked (or lying) body may stream."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = False  # the server rejects a malformed length itself
            if too_big:
                await error_response(_too_large(limit))(scope, receive, send)
                return
        seen = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await error_response(_too_large(limit))(scope, receive, send)
