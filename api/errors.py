"""Domain errors to HTTP, in one place, as problem+json (RFC 9457)."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.access import NotAllowed
from twin.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    SetupError,
    TwinError,
)

logger = logging.getLogger("twin.api")

STATUS_CODES: dict[type[TwinError], int] = {
    InvalidInput: 400,
    NotAllowed: 401,
    NotFound: 404,
    Conflict: 409,
    DatabaseUnavailable: 503,
    SetupError: 503,
}
TITLES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict",
          422: "Unprocessable Content"}  # fmt: skip


class Unprocessable(Exception):
    """Input that was read but none of it could be used: 422, with extension members
    (RFC 9457) that say why, e.g. an import's rejections."""

    def __init__(self, detail: str, **members: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.members = members


def problem(status: int, title: str, detail: str, instance: str, **members: Any) -> JSONResponse:
    """A problem+json answer; ``members`` are extra fields beside the standard ones."""
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail,
         "instance": instance, **members},
        status_code=status,
        media_type="application/problem+json",
    )  # fmt: skip


def install_error_handlers(app: FastAPI) -> None:
    """Map every domain error and every bad parameter to a clear 4xx/5xx problem."""

    @app.exception_handler(TwinError)
    async def twin_error(request: Request, exc: TwinError) -> JSONResponse:
        status = next((c for t, c in STATUS_CODES.items() if isinstance(exc, t)), 500)
        title = TITLES.get(status, "Service Unavailable")
        return problem(status, title, str(exc), request.url.path)

    @app.exception_handler(Unprocessable)
    async def unprocessable(request: Request, exc: Unprocessable) -> JSONResponse:
        return problem(422, TITLES[422], exc.detail, request.url.path, **exc.members)

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def too_slow(request: Request, exc: psycopg.Error) -> JSONResponse:
        return problem(
            503, "Service Unavailable", "the query took too long and was stopped", request.url.path
        )

    @app.exception_handler(psycopg.Error)
    async def database_error(request: Request, exc: psycopg.Error) -> JSONResponse:
        # Never data base text to the client: it can reveal the schema. The log has it.
        logger.error("data base error on %s: %s", request.url.path, exc)
        return problem(
            500,
            "Internal Server Error",
            "the data base could not answer this request",
            request.url.path,
        )

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return problem(400, "Bad Request", details, request.url.path)
