"""Health of the data base: reachable, PostGIS present, schema current."""

from __future__ import annotations

from typing import Any

import psycopg

from twin.db import head_revision


def check(conn: psycopg.Connection) -> dict[str, Any]:
    """A report with ``status`` ``ok`` or ``degraded`` and what was found."""
    postgis = conn.execute("SELECT postgis_lib_version()").fetchone()
    revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    head = head_revision()
    current = revision[0] if revision else None
    return {
        "status": "ok" if postgis and current == head else "degraded",
        "database": "ok",
        "postgis": postgis[0] if postgis else None,
        "schema_revision": current,
        "schema_head": head,
    }
