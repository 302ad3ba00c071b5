"""Dependency aliases that keep routes short: a pooled connection per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import orjson
import psycopg
from fastapi import Depends, Request, Response
from psycopg_pool import PoolTimeout

from twin.errors import DatabaseUnavailable


def connection(request: Request) -> Iterator[psycopg.Connection]:
    """A connection from the app's pool, returned (and rolled back if left open) after."""
    try:
        with request.app.state.pool.connection() as conn:
            yield conn
    except PoolTimeout as exc:
        raise DatabaseUnavailable(
            "the data base is not answering (connection pool timed out)"
        ) from exc


Connection = Annotated[psycopg.Connection, Depends(connection)]


class FastJSON(Response):
    """JSON written by orjson, without FastAPI's per-value encoder: the answers of the
    one-map questions are plain data already, and every millisecond counts there."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS, default=str)
