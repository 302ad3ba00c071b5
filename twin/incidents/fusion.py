"""Fusion (事件融合): a second report of the same problem joins the incident already open
for it instead of sending a second unit. Intake asks ``find_original`` inside its
transaction, before it dispatches; the rule, the category's own ``fusion_radius_m`` and
``fusion_hours``:

- an open incident (not closed, cancelled, duplicate or not our duty) of the same
  category, reported within the radius (geodesic) and within the hours of the new
  report's time, or
- one attached to the same asset (the same layer and id among the attached assets; a
  long pipe's two ends are one burst), within the same hours.

The earliest such incident is the original; a duplicate is never one (it is not open).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from twin import spatial
from twin.incidents.categories import Category

# What is over or no longer anyone's work: a new report next to it is a new incident.
NOT_OPEN = ("closed", "cancelled", "duplicate", "not_our_duty")


def _metres(value: float) -> str:
    return f"{value:g}"


def find_original(
    conn: psycopg.Connection,
    category: Category,
    point: tuple[float, float],
    when: datetime,
    assets: list[dict[str, Any]],
) -> tuple[int, str] | None:
    """The open incident a new report of ``category`` at ``point`` (storage lon, lat),
    made at ``when`` and attached to ``assets``, repeats: its id and the reason in words
    ("same category within 50 m and 24 h", "same asset pipes-123 (WM-0001)"); None for a new
    problem. Call inside the intake's transaction: it serialises the intakes of one
    category, so two reports of the same burst at once do not both dispatch."""
    # Two reports at once would not see each other's uncommitted rows: one waits here.
    # The original is locked too, so it is not closed before the duplicate joins it.
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 12))", (category.code,))
    hours = timedelta(hours=category.fusion_hours)
    near = spatial.near_point(point[0], point[1], category.fusion_radius_m)
    keys = [Jsonb([{"layer": a["layer"], "id": a["id"]}]) for a in assets]
    same_asset = sql.SQL("FALSE")
    if keys:
        same_asset = sql.SQL("f.assets @> ANY(%(keys)s::jsonb[])")
    query = sql.SQL(
        """
        SELECT f.id, ({near}) AS near, f.assets
        FROM incidents f
        WHERE f.category_code = %(category)s AND f.status <> ALL(%(not_open)s)
          AND f.reported_at BETWEEN %(since)s AND %(until)s
          AND (({near}) OR {same_asset})
        ORDER BY f.reported_at, f.id
        LIMIT 1
        FOR UPDATE OF f
        """
    ).format(near=near, same_asset=same_asset)
    row = conn.execute(
        query,
        {"category": category.code, "not_open": list(NOT_OPEN), "since": when - hours,
         "until": when + hours, "keys": keys},
    ).fetchone()  # fmt: skip
    if row is None:
        return None
    original, is_near, their_assets = row
    if is_near:
        return int(original), (
            f"same category within {_metres(category.fusion_radius_m)} m and "
            f"{_metres(category.fusion_hours)} h"
        )
    theirs = {(a["layer"], a["id"]) for a in their_assets}
    shared = next(a for a in assets if (a["layer"], a["id"]) in theirs)
    name = f"{shared['layer']}-{shared['id']}"
    if shared.get("source_id"):
        name += f" ({shared['source_id']})"
    return int(original), f"same asset {name}"
