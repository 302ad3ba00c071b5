"""Health: is the data base there, with PostGIS and the newest schema."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.access import Operational, Public
from api.deps import Connection
from twin import health

router = APIRouter(tags=["health"])


@router.get(
    "/health", dependencies=[Public, Operational], summary="Liveness and data base check (public)"
)
def get_health(conn: Connection) -> JSONResponse:
    """``ok`` (200) when the data base answers with PostGIS and the current schema, else 503."""
    report: dict[str, Any] = health.check(conn)
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)
