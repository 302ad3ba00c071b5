"""Dependency aliases that keep routes short: a pooled connection per request, from the
pool of the route's class (api/access.py)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Concatenate, Literal, ParamSpec, TypeVar
from urllib.parse import urlsplit

import anyio
import orjson
import psycopg
from fastapi import Depends, Header, Query, Request, Response
from fastapi.routing import APIRoute
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import BeforeValidator
from starlette.datastructures import MutableHeaders
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.access import RouteClass, public, route_class
from api.errors import TITLES, problem
from twin import registry
from twin.errors import DatabaseUnavailable, InvalidInput


def _plain_number(value: Any) -> Any:
    # Python reads "1_0" as 10; a client that sent it meant something else.
    if isinstance(value, str) and "_" in value:
        raise ValueError(f"{value[:40]!r} is not a number")
    return value


_TILE_NUMBER = re.compile(r"0|[1-9][0-9]*")


def _tile_number(value: Any) -> Any:
    # int() also reads " 16", "+16", "016" and "١٦" as 16: one tile at several addresses,
    # which clients and proxies would each cache apart. A tile has one address.
    if isinstance(value, str) and not _TILE_NUMBER.fullmatch(value):
        raise ValueError(
            f"{value[:40]!r} is not a tile number: give plain digits 0-9, with no sign, "
            "space or leading zero"
        )
    return value


# For z, y and x of a tile's address: Annotated[int, Path(), TileNumber].
TileNumber = BeforeValidator(_tile_number)
# For numeric query parameters, beside their Query(): Annotated[int, Query(ge=1), Plain].
# (Inside an Annotated of its own, FastAPI writes Query's bounds into the API document
# under their Python names.)
Plain = BeforeValidator(_plain_number)
Number = Annotated[float, Plain]  # a float query parameter with no bounds
Whole = Annotated[int, Plain]  # an integer query parameter with no bounds
_DECLARED: dict[tuple[str, str], frozenset[str]] = {}
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


async def known_parameters(request: Request) -> None:
    """Refuses query parameters the route does not take (a typo such as ``layerz=`` would
    otherwise be answered with the defaults, as if it had been understood)."""
    route = request.scope.get("route")
    key = (request.method, getattr(route, "path", ""))
    names = _DECLARED.get(key)
    if names is None:
        names = _DECLARED[key] = frozenset(_query_names(route.dependant))  # type: ignore[union-attr]
    unknown = [name for name in request.query_params if name not in names]
    if unknown:
        if names:
            takes = f"takes {', '.join(sorted(names))}"
        elif request.method in _WITH_BODY:
            takes = "takes no query parameters (give them in the JSON body)"
        else:  # a GET has no body to send the client to
            takes = "takes no query parameters"
        raise InvalidInput(
            f"unknown query parameter {', '.join(repr(n[:40]) for n in unknown[:5])}; "
            f"{request.method} {request.url.path} {takes}"
        )


def _query_names(dependant: Any) -> set[str]:
    names = {field.alias for field in dependant.query_params}
    for inner in dependant.dependencies:
        names |= _query_names(inner)
    return names


KnownParameters = Depends(known_parameters)


async def json_format(
    f: Annotated[
        Literal["json"] | None,
        Query(description="the format: json, the only one this document is served in"),
    ] = None,
) -> None:
    """OGC API's ``f``, which clients add (GDAL repeats the query of the address it was
    given on every request): taken when it asks for what the route serves."""


# For the OGC documents that are JSON only, beside KnownParameters.
JsonFormat = Depends(json_format)


def _json_loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # numbers beyond a double (1e400), which jsonb can hold


def configure(conn: psycopg.Connection) -> None:
    """Every pooled connection reads jsonb with orjson: 5,000 features' jsonb parsed by
    the standard library held the GIL (so the event loop) four times as long."""
    set_json_loads(_json_loads, conn)


def _operational(request: Request) -> bool:
    return route_class(request.scope.get("route")) is RouteClass.OPERATIONAL


@contextmanager
def pooled_connection(
    request: Request, operational: bool | None = None, *, pool_name: str | None = None
) -> Iterator[psycopg.Connection]:
    """A connection from the pool of the route's class (operational routes have their own),
    or from the app's pool ``pool_name`` when it has one (intake's batches), returned (and
    rolled back if left open) after."""
    state = request.app.state
    if operational is None:
        operational = _operational(request)
    pool: ConnectionPool = state.operational_pool if operational else state.pool
    if pool_name is not None:
        pool = getattr(state, pool_name, None) or pool
    try:
        with pool.connection() as conn:
            yield conn
    except PoolTimeout as exc:
        raise DatabaseUnavailable(
            "the data base is not answering (connection pool timed out)"
        ) from exc


def catalogue_of(request: Request, conn: psycopg.Connection) -> registry.Catalogue:
    """The catalogue as this process holds it (read afresh on ``conn`` after a change)."""
    snapshot: registry.Snapshot = request.app.state.catalogue
    return snapshot.get(conn)


async def _catalogue_changed(request: Request) -> AsyncIterator[None]:
    """After a write route has run: this process's next answer reads the catalogue afresh
    (the change log's notice says so too, a moment later, to every process). Async: it
    only sets a flag, and a sync generator took two trips through the thread pool."""
    try:
        yield
    finally:
        snapshot: registry.Snapshot = request.app.state.catalogue
        snapshot.invalidate()


# For routes that write features or layers: their own next answer is current.
WritesLayers = Depends(_catalogue_changed, scope="function")


def connection(request: Request) -> Iterator[psycopg.Connection]:
    """The dependency: a pooled connection for the request."""
    with pooled_connection(request) as conn:
        yield conn


# Given back as soon as the route has answered, not after a slow client has read it all.
Connection = Annotated[psycopg.Connection, Depends(connection, scope="function")]

P = ParamSpec("P")
T = TypeVar("T")


async def with_connection(
    request: Request,
    call: Callable[Concatenate[psycopg.Connection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``call(conn, *args, **kwargs)`` on a pooled connection, in one trip through the
    thread pool, for an async route. A sync route with the ``Connection`` dependency
    takes four (checkout, route, return, validating the answer): on the 2-core standard
    machine that was a fifth of locate's time over HTTP. Operational routes run on
    threads of their own, so a thread pool full of public requests cannot hold them up."""
    return await with_pool_connection(request, None, call, *args, **kwargs)


async def with_pool_connection(
    request: Request,
    pool_name: str | None,
    call: Callable[Concatenate[psycopg.Connection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``with_connection``, on a connection of the app's pool ``pool_name`` when it has
    one (else the route's class's pool)."""

    def run() -> T:
        with pooled_connection(request, operational, pool_name=pool_name) as conn:
            return call(conn, *args, **kwargs)

    operational = _operational(request)  # once per request: locate and nearest are hot
    limiter = request.app.state.operational_threads if operational else None
    return await anyio.to_thread.run_sync(run, limiter=limiter)


class FastJSON(Response):
    """JSON written by orjson, without FastAPI's per-value encoder: the answers of the
    one-map questions are plain data already, and every millisecond counts there."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(
            content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY, default=str
        )


# --- HTTP conditions and encodings, the same on every route that answers bytes ----------

# A browser sends every ETag it holds for an address: some 150 of ours fit. Longer is no
# client's list, and is refused (400 naming the header) on every route that reads it.
IF_NONE_MATCH_MAX = 8192
IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match", max_length=IF_NONE_MATCH_MAX)]


def base_url(request: Request) -> str:
    """The address the client reached the API at, without a trailing slash (links)."""
    return str(request.base_url).rstrip("/")


def etag_matches(if_none_match: str | None, tags: set[str] | frozenset[str]) -> bool:
    """Whether If-None-Match names one of ``tags`` or is ``*``: the weak comparison
    RFC 9110 asks for GET (a ``W/`` prefix does not matter)."""
    if if_none_match is None:
        return False
    given = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in given or not given.isdisjoint(tags)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether Accept-Encoding takes gzip: named (or as x-gzip) with a weight above 0, or
    else ``*`` with one (a coding named is weighed before ``*``: ``*;q=0, gzip`` takes it,
    ``gzip;q=0`` refuses it)."""
    weights: dict[str, float] = {}
    for part in (accept_encoding or "").lower().split(","):
        coding, *params = (p.strip() for p in part.split(";"))
        weight = next((p[2:] for p in params if p.startswith("q=")), "1")
        try:
            weights.setdefault("gzip" if coding == "x-gzip" else coding, float(weight))
        except ValueError:
            weights.setdefault(coding, 0.0)
    return weights.get("gzip", weights.get("*", 0.0)) > 0


_BYTE_RANGE = re.compile(r"([0-9]*)-([0-9]*)")  # ASCII digits: isdigit() takes "²"


def byte_range(range_header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range (first, last, inclusive) that a Range header asks of ``size``
    bytes; None to answer the whole (no Range, several ranges, one not in bytes or not
    well formed, such as 5-2: HTTP lets a server ignore those); ValueError when the range
    holds no byte there is (416): it starts past the end, or is the last 0 bytes."""
    if range_header is None:
        return None
    unit, _, spec = range_header.partition("=")
    # A list may hold empty elements, which a recipient ignores (RFC 9110, 5.6.1).
    ranges = [part.strip() for part in spec.split(",") if part.strip()]
    if unit.strip().lower() != "bytes" or len(ranges) != 1:
        return None
    well_formed = _BYTE_RANGE.fullmatch(ranges[0])
    if well_formed is None or well_formed[0] == "-":
        return None
    first_text, last_text = well_formed.groups()
    if first_text == "":  # the last N bytes
        if int(last_text) == 0:
            raise ValueError("the range asks for the last 0 bytes, which is no byte")
        return (max(0, size - int(last_text)), size - 1)
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # not a range (RFC 9110, 14.1.1): ignored, as a malformed header is
    if first >= size:
        raise ValueError(f"the range starts at byte {first}, past the {size} bytes there are")
    last = size - 1 if last_text == "" else min(int(last_text), size - 1)
    return (first, last)


# --- cross-origin reads of the public routes ---------------------------------------------

# What a page on another origin may read of an answer beyond the safelisted headers.
CORS_EXPOSED = (
    "ETag, Content-Range, Accept-Ranges, Link, Retry-After, X-Tile-Cache, X-Tile-Truncated"
)
CORS_MAX_AGE_S = 3600  # how long a browser keeps a preflight's answer
# Set in the scope by what answers a public route's request ahead of the routes
# (tiles.TileFront): its answer takes the CORS headers a route's would.
PUBLIC_ANSWER = "twin.public"
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # a header's name (RFC 9110, 5.1)


def is_public_get(route: Any) -> bool:
    """Whether ``route`` is a GET route open to anyone (its audience is ``Public``)."""
    return (
        isinstance(route, APIRoute)
        and "GET" in route.methods
        and any(dependency.call is public for dependency in route.dependant.dependencies)
    )


def _routes(routes: Iterable[Any]) -> Iterator[Any]:
    """The routes in the order the app tries them, inside included routers too."""
    for route in routes:
        if hasattr(route, "original_router"):
            yield from _routes(route.original_router.routes)
        else:
            yield route


def _public_get_at(scope: Scope) -> bool:
    """Whether a GET of the scope's path would reach a public route (for a preflight,
    which the routing itself cannot answer: it is an OPTIONS)."""
    asked = {**scope, "method": "GET"}
    for route in _routes(scope["app"].routes):
        if isinstance(route, BaseRoute) and route.matches(asked)[0] is Match.FULL:
            return is_public_get(route)
    return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class PublicCORS:
    """Cross-origin reads (CORS) of the public GET routes: map clients on other origins
    (MapLibre, deck.gl pages, TiPg's and Martin's users) fetch the tiles, TileJSON,
    terrain and the OGC collections. ``origins`` is TWIN_CORS_ORIGINS: ``*``, or origins
    separated by commas.

    Never credentials, and never a staff route or a write: a preflight for those is 403.
    With ``*`` every public answer carries ``Access-Control-Allow-Origin: *``, asked with
    an Origin or not, so a shared cache's copy serves every page; with a list, the
    origin is echoed when listed and the answers vary by Origin. Sits inside InputGuard
    (which answers HEAD as GET) and outside TileFront (whose answers it marks)."""

    def __init__(self, app: ASGIApp, origins: str) -> None:
        self.app = app
        listed = [origin.strip().rstrip("/") for origin in origins.split(",") if origin.strip()]
        self.any = "*" in listed
        self.origins = frozenset(listed)

    def _allowed(self, origin: str | None) -> str | None:
        if self.any:
            return "*"
        return origin if origin in self.origins else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            origin = _header(scope, b"origin")
            method = _header(scope, b"access-control-request-method")
            if origin is not None and method is not None:
                await self._preflight(scope, origin, method)(scope, receive, send)
                return
        elif scope["type"] == "http" and scope["method"] == "GET":
            allowed = self._allowed(_header(scope, b"origin"))
            await self.app(scope, receive, self._marked(scope, send, allowed))
            return
        await self.app(scope, receive, send)

    def _marked(self, scope: Scope, send: Send, allowed: str | None) -> Send:
        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start" and (
                scope.get(PUBLIC_ANSWER) or is_public_get(scope.get("route"))
            ):
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                if allowed is not None:
                    headers["Access-Control-Allow-Origin"] = allowed
                    headers["Access-Control-Expose-Headers"] = CORS_EXPOSED
                if not self.any:
                    headers.add_vary_header("Origin")
            await send(message)

        return marked

    def _preflight(self, scope: Scope, origin: str, method: str) -> Response:
        path = scope["path"]
        if method not in ("GET", "HEAD") or not _public_get_at(scope):
            return problem(403, TITLES[403], f"a page on another origin may read the public "
                           f"routes only (GET, HEAD); {method[:20]} {path} is not one", path)  # fmt: skip
        allowed = self._allowed(origin)
        if allowed is None:
            return problem(403, TITLES[403], f"pages of {origin[:100]!r} may not read this "
                           "API: their origin is not in TWIN_CORS_ORIGINS", path)  # fmt: skip
        headers = {
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Allow-Methods": "GET, HEAD",
            "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
            "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        }
        # Whatever request headers the page sends (If-None-Match, Range, its own): the
        # answers are public, and no credentials are ever taken.
        asked = _header(scope, b"access-control-request-headers") or ""
        names = [n.strip() for n in asked.split(",") if _TOKEN.fullmatch(n.strip())]
        if names:
            headers["Access-Control-Allow-Headers"] = ", ".join(names)
        if _header(scope, b"access-control-request-private-network") == "true":
            headers["Access-Control-Allow-Private-Network"] = "true"  # an intranet server
        return Response(status_code=204, headers=headers)


# --- the public address ------------------------------------------------------------------


class PublicAddress:
    """Every link and redirect starts with TWIN_PUBLIC_URL (``public_url``), whatever Host
    a request carries: the request is seen as made to that address (its scheme, its
    host and port, and its path under the URL's own path, the ``root_path`` Starlette
    builds URLs with). A proxy may pass the path on with that prefix or without it.

    Without it, links are made from the request's Host header (InputGuard has refused
    one that is no host[:port]): a client that sends another host name gets links to
    it, which only misleads that client; set the URL wherever caches are shared."""

    def __init__(self, app: ASGIApp, public_url: str) -> None:
        self.app = app
        parts = urlsplit(public_url)
        self.scheme = parts.scheme
        self.host = parts.netloc.encode("latin-1")
        self.prefix = parts.path.rstrip("/")
        self.raw_prefix = self.prefix.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
        headers.append((b"host", self.host))
        path, raw_path = scope["path"], scope.get("raw_path")
        if self.prefix and not (path == self.prefix or path.startswith(self.prefix + "/")):
            path = self.prefix + path
            raw_path = None if raw_path is None else self.raw_prefix + raw_path
        public = {**scope, "scheme": self.scheme, "headers": headers, "path": path,
                  "raw_path": raw_path, "root_path": self.prefix}  # fmt: skip
        await self.app(public, receive, send)


def route_path(scope: Scope) -> str:
    """The scope's path without its root_path (TWIN_PUBLIC_URL's path): what routes match."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :]
    return path
