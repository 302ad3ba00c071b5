"""Dependency aliases that keep routes short: a pooled connection per request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Concatenate, ParamSpec, TypeVar

import orjson
import psycopg
from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from psycopg_pool import PoolTimeout

from twin.errors import DatabaseUnavailable


@contextmanager
def pooled_connection(request: Request) -> Iterator[psycopg.Connection]:
    """A connection from the app's pool, returned (and rolled back if left open) after."""
    try:
        with request.app.state.pool.connection() as conn:
            yield conn
    except PoolTimeout as exc:
        raise DatabaseUnavailable(
            "the data base is not answering (connection pool timed out)"
        ) from exc


def connection(request: Request) -> Iterator[psycopg.Connection]:
    """The dependency: a pooled connection for the request."""
    with pooled_connection(request) as conn:
        yield conn


Connection = Annotated[psycopg.Connection, Depends(connection)]

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
    machine that was a fifth of locate's time over HTTP."""

    def run() -> T:
        with pooled_connection(request) as conn:
            return call(conn, *args, **kwargs)

    return await run_in_threadpool(run)


class FastJSON(Response):
    """JSON written by orjson, without FastAPI's per-value encoder: the answers of the
    one-map questions are plain data already, and every millisecond counts there."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS, default=str)
