"""Domain errors to HTTP, in one place, as problem+json (RFC 9457).

``TooLarge`` is the core's (twin.errors), raised here too for bodies over their limit."""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qsl

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api import open311
from api.access import Busy, NotAllowed
from tiles.vector import TileTooHeavy
from twin.errors import (
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    InvalidInput,
    NotFound,
    NothingStored,
    SetupError,
    TooLarge,
    TwinError,
    UnsupportedMedia,
)

logger = logging.getLogger("twin.api")


class PreconditionFailed(TwinError):
    """An If-Match that no longer matches (the thing changed since it was read): 412."""


MAX_BODY_MB = 100  # a JSON body, on any route; larger data comes as a file upload
# The feature API's own parameters: given twice, no filter hint (they are not properties).
_ITEMS_PARAMETERS = frozenset({"limit", "offset", "bbox", "bbox-crs", "crs", "properties",
                               "sortby", "datetime", "filter", "filter-lang", "filter-crs",
                               "after", "f"})  # fmt: skip
MAX_REJECTIONS_SHOWN = 20  # in an import's 422 answer; the CLI's --json report has them all


STATUS_CODES: dict[type[TwinError], int] = {
    InvalidInput: 400,
    NothingStored: 422,
    TooLarge: 413,
    UnsupportedMedia: 415,
    NotAllowed: 401,
    Forbidden: 403,
    NotFound: 404,
    PreconditionFailed: 412,
    Conflict: 409,
    DatabaseUnavailable: 503,
    Busy: 503,
    TileTooHeavy: 503,  # over its time or byte limits: Retry-After
    SetupError: 503,
}
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
          409: "Conflict", 412: "Precondition Failed", 413: "Content Too Large", 415: "Unsupported Media Type",
          422: "Unprocessable Content", 429: "Too Many Requests", 503: "Service Unavailable"}  # fmt: skip


def problem(status: int, title: str, detail: str, instance: str, **members: Any) -> Response:
    """A problem+json answer; ``members`` are extra fields beside the standard ones. Under
    /open311/ the error document of Open311 GeoReport v2 instead, which 311 clients read."""
    if instance.startswith(open311.PREFIX):
        return open311.error_response(status, detail, instance)
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail,
         "instance": instance, **members},
        status_code=status,
        media_type="application/problem+json",
    )  # fmt: skip


def install_error_handlers(app: FastAPI) -> None:
    """Map every domain error and every bad parameter to a clear 4xx/5xx problem."""

    @app.exception_handler(TwinError)
    async def twin_error(request: Request, exc: TwinError) -> Response:
        status = next((c for t, c in STATUS_CODES.items() if isinstance(exc, t)), 500)
        title = TITLES.get(status, "Service Unavailable")
        detail, members = str(exc), {}
        if isinstance(exc, InvalidInput) and exc.option:
            # The core names the input that was wrong; over HTTP it is this parameter.
            detail, members = f"{detail} (parameter {exc.option})", {"parameter": exc.option}
        elif isinstance(exc, NothingStored):
            members = _nothing_stored(exc)
        answer = problem(status, title, detail, request.url.path, **members)
        if isinstance(exc, Busy):  # the heavy gate turned it away: come back after this
            answer.headers["Retry-After"] = str(exc.retry_after_s)
        elif status == 503:
            answer.headers["Retry-After"] = "5"
        return answer

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def too_slow(request: Request, exc: psycopg.Error) -> Response:
        detail = "the query took too long and was stopped"
        if request.method != "GET" and request.url.path.startswith("/layers/"):
            # A write the import time limit stopped (see api/routes/imports.py).
            limit = request.app.state.settings.imports.import_time_limit_s
            detail = (
                f"the import ran past its time limit ({limit:g} s, TWIN_IMPORT_TIME_LIMIT_S) "
                "and was stopped; nothing of it was stored: import a file this large with "
                "twin import"
            )
        return problem(503, "Service Unavailable", detail, request.url.path)

    @app.exception_handler(psycopg.Error)
    async def database_error(request: Request, exc: psycopg.Error) -> Response:
        # Never data base text to the client: it can reveal the schema. The log has it.
        logger.error("data base error on %s: %s", request.url.path, exc)
        if isinstance(exc, psycopg.OperationalError):
            # The data base went away (stopped, restarting, the network): the service is
            # unavailable for now, not broken; /health says so too.
            answer = problem(503, "Service Unavailable", "the data base is not answering; "
                             "retry after the time in Retry-After", request.url.path)  # fmt: skip
            answer.headers["Retry-After"] = "5"
            return answer
        return problem(
            500,
            "Internal Server Error",
            "the data base could not answer this request",
            request.url.path,
        )

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        details = "; ".join(_validation_message(e) for e in errors)
        # The first parameter named, as the core's InvalidInput names its option.
        named = [e["loc"] for e in errors if len(e.get("loc", ())) > 1
                 and e["loc"][0] in ("query", "path", "header")]  # fmt: skip
        members = {"parameter": str(named[0][1])} if named else {}
        return problem(400, "Bad Request", details, request.url.path, **members)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # Starlette's own answers (no such route, wrong method, a body it cannot read)
        # in the same problem+json as ours, in our words.
        status = exc.status_code
        detail = str(exc.detail)
        headers = dict(exc.headers or {})
        if status == 404 and detail == "Not Found":
            detail = f"there is nothing at {request.url.path}; see / for what there is"
        elif status == 400 and detail == "There was an error parsing the body":
            detail = "the body cannot be read: it is not JSON, or it is nested too deeply"
        elif status == 400 and (form := _form_problem(detail)) is not None:
            status, detail = form
        elif status == 405:
            # Starlette names the methods of the first route of the path only; a path
            # served by several routes (GET and POST /incidents) takes them all.
            allowed = ", ".join(_methods_at(request)) or headers.get("Allow", "")
            if allowed:
                headers["Allow"] = allowed
            detail = f"{request.method} is not allowed on {request.url.path}; use {allowed or 'another method'}"
        response = problem(status, TITLES.get(status, "Error"), detail, request.url.path)
        response.headers.update(headers)
        return response

    app.add_middleware(InputGuard)


def _methods_at(request: Request) -> list[str]:
    """Every method some route serves at the request's path (walking included routers)."""
    from fastapi.routing import APIRoute
    from starlette.routing import Match

    methods: set[str] = set()
    pending = list(request.app.routes)
    while pending:
        route = pending.pop()
        if hasattr(route, "original_router"):  # an included router
            pending.extend(route.original_router.routes)
        elif isinstance(route, APIRoute):
            match, _ = route.matches({**request.scope, "method": next(iter(route.methods))})
            if match is Match.FULL:
                methods |= route.methods
    return sorted(methods - {"HEAD"})


def _nothing_stored(exc: NothingStored) -> dict[str, Any]:
    """The extension members (RFC 9457) of an import that stored nothing: its report, and
    the first rejections and why."""
    report = exc.report
    rejected = [{"layer": p.layer, **asdict(r)} for p in report.parts for r in p.rejected]
    summary = {k: v for k, v in report.as_dict().items() if k not in ("rejected", "related")}
    return {
        "report": summary,
        "rejected_count": len(rejected),
        "rejected": rejected[:MAX_REJECTIONS_SHOWN],
    }


def _form_problem(detail: str) -> tuple[int, str] | None:
    """python-multipart's complaints about a form (Starlette passes them on as they are),
    in our words, or None for any other."""
    size = re.fullmatch(r"(?:Part|Field) exceeded maximum size of (\d+)KB\.", detail)
    if size:
        limit = f"{int(size[1]) // 1024} MB" if int(size[1]) >= 1024 else f"{size[1]} KB"
        return 413, (
            f"a form field is larger than {limit}, the most a form field other than the "
            "file may be; send the data in the file"
        )
    if detail.startswith(("Too many fields", "Too many files")):
        return 400, "the form has too many fields or files: send one file and its options"
    if detail in ("Missing boundary in multipart.", "Invalid multipart data.",
                  'The Content-Disposition header field "name" must be provided.'):  # fmt: skip
        return 400, "the form cannot be read: send it as multipart/form-data"
    return None


_WHERE = {"query": "query parameter", "path": "path segment", "header": "header",
          "body": "body", "cookie": "cookie"}  # fmt: skip


def _validation_message(error: Any) -> str:
    """One of pydantic's errors in the client's terms: which parameter, what is wrong."""
    loc = [str(p) for p in error.get("loc", ())]
    where = _WHERE.get(loc[0], loc[0]) if loc else "request"
    name = ".".join(loc[1:])
    place = f"{where} {name}".strip()
    kind = error.get("type", "")
    value = error.get("input")
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return f"the body is not valid JSON ({reason})" if reason else "the body is not valid JSON"
    if kind == "finite_number" or _non_finite(value):
        return f"{place}: {str(value)[:40]!r} is not a finite number"
    if kind == "missing":
        return f"{place} is required"
    ctx = error.get("ctx") or {}
    bounds = {"string_too_long": f"is longer than {ctx.get('max_length')} characters",
              "less_than_equal": f"{str(value)[:40]} is more than {ctx.get('le')}",
              "greater_than_equal": f"{str(value)[:40]} is less than {ctx.get('ge')}",
              "greater_than": f"{str(value)[:40]} is not more than {ctx.get('gt')}",
              "less_than": f"{str(value)[:40]} is not less than {ctx.get('lt')}"}  # fmt: skip
    if kind in bounds:
        return f"{place}: {bounds[kind]}"
    expected = {"dict_type": "a JSON object", "model_attributes_type": "a JSON object",
                "model_type": "a JSON object", "list_type": "a JSON array",
                "string_type": "text", "int_type": "a whole number", "float_type": "a number",
                "int_from_float": "a whole number",
                "bool_type": "true or false"}.get(kind)  # fmt: skip
    if expected is not None:
        if place == "body" and expected == "a JSON object":
            return "the body must be a JSON object, sent as Content-Type: application/json"
        return f"{place} must be {expected}, not {_json_kind(value)}"
    if kind == "extra_forbidden":
        return f"{place} is not a field this request takes"
    if kind == "value_error":
        return f"{place}: {str(error.get('msg', '')).removeprefix('Value error, ')}"
    message = str(error.get("msg", "is not valid"))
    if kind in ("datetime_from_date_parsing", "datetime_parsing", "datetime_type"):
        return (f"{place}: {str(value)[:40]!r} is not a date and time; give one with its "
                "time zone, e.g. 2026-12-01T08:00:00+08:00")  # fmt: skip
    if kind in ("int_parsing", "float_parsing", "bool_parsing") and isinstance(value, str):
        message = f"{value[:40]!r} is not {'an integer' if kind == 'int_parsing' else 'a number' if kind == 'float_parsing' else 'true or false'}"
    return f"{place}: {message}"


def _json_kind(value: Any) -> str:
    kinds = ((bool, "true/false"), (int, "a number"), (float, "a number"), (str, "text"),
             (list, "an array"), (dict, "an object"))  # fmt: skip
    return next((name for kind, name in kinds if isinstance(value, kind)), "null")


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, str):
        return value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity")
    return False


class InputGuard:
    """Refuses, before any route, what no route can take, naming where: a NUL byte in the
    path or query (PostgreSQL text cannot hold one: it would reach a query and answer 500),
    a query parameter given twice (every route would silently take the last) and a Host
    header that is no host[:port] (links and redirects are made from it, unless
    TWIN_PUBLIC_URL is set). Answers HEAD as GET without the body, as HTTP asks of every
    GET route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            detail = _refused(scope)
            if detail is not None:
                path = scope.get("path", "").replace("\x00", "")
                await problem(400, TITLES[400], detail, path)(scope, receive, send)
                return
            detail = _bad_host(scope)
            if detail is not None:
                response = problem(
                    400, TITLES[400], detail, scope.get("path", ""), parameter="Host"
                )
                await response(scope, receive, send)
                return
            too_large = _json_body_over_limit(scope)
            if too_large is not None:
                response = problem(413, TITLES[413], too_large, scope.get("path", ""))
                await response(scope, receive, send)
                return
            if scope["method"] == "HEAD":  # HTTP asks HEAD wherever GET is: GET, no body
                await self.app({**scope, "method": "GET"}, receive, _headers_only(send))
                return
        await self.app(scope, receive, send)


def _json_body_over_limit(scope: Scope) -> str | None:
    """Why a JSON body is refused unread: a Content-Length over MAX_BODY_MB (every JSON
    route would read it whole into memory before its own checks)."""
    headers = dict(scope.get("headers") or [])
    if b"json" not in headers.get(b"content-type", b""):
        return None
    try:
        length = int(headers.get(b"content-length", b"0"))
    except ValueError:
        return None
    if length <= MAX_BODY_MB * 1024 * 1024:
        return None
    return (
        f"the request body is larger than {MAX_BODY_MB} MB: send less per request, or upload a file"
    )


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"  # _ too: compose's service names
_HOST = re.compile(
    rf"(?:\[(?P<ipv6>[0-9A-Fa-f:.]{{2,45}})\]|(?P<name>{_LABEL}(?:\.{_LABEL})*\.?))"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


def _bad_host(scope: Scope) -> str | None:
    """Why the request's Host header cannot be the address in links and redirects: it is
    given twice, or is not a host name or IP address with an optional port (RFC 9110,
    7.2; HTTP/1.1 asks a server to answer 400 to it). None when it is fine or absent (an
    HTTP/1.0 client: the server's own address), or empty (a target with no authority)."""
    hosts = [value for name, value in scope.get("headers") or () if name == b"host"]
    if len(hosts) > 1:
        return "the request has more than one Host header; send one"
    if not hosts or not hosts[0]:
        return None
    text = hosts[0].decode("latin-1")
    found = _HOST.fullmatch(text) if len(text) <= 260 else None
    if found is not None and found["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(found["ipv6"])
        except ValueError:
            found = None
    if found is None or (found["port"] is not None and not 0 < int(found["port"]) <= 65535):
        return (
            f"the Host header {text[:100]!r} is not a host name or address with an "
            "optional port (map.example.org, 10.0.0.7:8000, [::1]:8000)"
        )
    return None


def _headers_only(send: Send) -> Send:
    async def headers_only(message: Any) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return headers_only


def _refused(scope: Scope) -> str | None:
    path = scope.get("path", "")
    if "\x00" in path or b"%00" in (scope.get("raw_path") or b""):
        return "the path holds a NUL byte (%00), which no name may hold"
    query = scope.get("query_string", b"")
    if not query:
        return None
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    seen: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            return f"query parameter {name[:40].replace(chr(0), '')!r} holds a NUL byte (%00), which no value may hold"
        if name in seen:
            hint = ""
            if path.endswith("/items") and name not in _ITEMS_PARAMETERS:
                hint = f"; to match any of several values use filter={name} IN ('…', '…')"
            return f"query parameter {name[:40]!r} is given more than once; give it once{hint}"
        seen[name] = value
    return None
