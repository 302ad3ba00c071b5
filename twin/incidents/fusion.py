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

Two reports of one problem at once would not see each other's uncommitted rows, so the
intakes that could fuse take turns (``_take_turn``): each takes, for its category, the
cells of a grid of ``CELL_DEG`` degrees that the box around its fusion circle touches, and
each asset it is attached to. Two reports within the radius of each other share the cell
of either one's point (it lies in both boxes); two on one asset share that asset: they
wait for each other, and the second sees the first. Reports in other cells of the same
category go on at once. A circle too large for a few cells, or near a pole or the
antimeridian, takes the whole category, as every intake once did (the others hold it
shared).
"""

from __future__ import annotations

import functools
import hashlib
import math
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from twin import spatial
from twin.incidents.categories import Category

# What is over or no longer anyone's work: a new report next to it is a new incident.
NOT_OPEN = ("closed", "cancelled", "duplicate", "not_our_duty")
CELL_DEG = 0.01  # about 1.1 km north-south: the default 50 m circle touches 1 to 4 cells
MAX_CELLS = 16  # beyond: the whole category takes its turn


class Original(NamedTuple):
    """The open incident a report repeats: its id, the reason in words, its status."""

    incident: int
    why: str
    status: str


def _key(text: str) -> int:
    """A 64-bit advisory lock key for ``text`` (signed, as PostgreSQL takes it)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big",
                          signed=True)  # fmt: skip


def _take_turn(conn: psycopg.Connection, category: Category, point: tuple[float, float],
               assets: list[dict[str, Any]]) -> None:  # fmt: skip
    """Wait until no other intake that could fuse with this report is under way, and hold
    its turn until the commit (see the module's notes)."""
    whole = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 12))"
    box = spatial._search_box(point[0], point[1], category.fusion_radius_m)
    if box is None:
        conn.execute(whole, (category.code,))
        return
    dlon, dlat = box
    west, east = math.floor((point[0] - dlon) / CELL_DEG), math.floor((point[0] + dlon) / CELL_DEG)
    south, north = (
        math.floor((point[1] - dlat) / CELL_DEG),
        math.floor((point[1] + dlat) / CELL_DEG),
    )
    if (east - west + 1) * (north - south + 1) > MAX_CELLS:
        conn.execute(whole, (category.code,))
        return
    names = [f"{category.code}|cell|{x}|{y}" for x in range(west, east + 1)
             for y in range(south, north + 1)]  # fmt: skip
    names += [f"{category.code}|asset|{a['layer']}|{a['id']}" for a in assets]
    # One order for every intake (by key), so two never wait for each other in a circle;
    # the category shared first, so a whole-category turn waits for these and they for it.
    keys = sorted(set(map(_key, names)))
    conn.execute(
        "SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, 12)), "
        + ", ".join(["pg_advisory_xact_lock(%s)"] * len(keys)),
        (category.code, *keys),
    )


_QUERY = sql.SQL(
    """
    SELECT f.id, ({near}) AS near, f.assets, f.status
    FROM incidents f
    WHERE f.category_code = %(category)s AND f.status <> ALL(%(not_open)s)
      AND f.reported_at BETWEEN %(since)s AND %(until)s
      AND (({near}) OR {same_asset})
    ORDER BY f.reported_at, f.id
    LIMIT 1
    FOR UPDATE OF f
    """
)
_SAME_ASSET = sql.SQL("f.assets @> ANY(%(keys)s::jsonb[])")
# spatial.near_point's test with one box (spatial._search_box's), as parameters.
_NEAR_BOXED = sql.SQL(
    "f.geom && ST_Expand(ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326), %(dlon)s, %(dlat)s)"
    " AND ST_DWithin(f.geom::geography,"
    " ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)::geography, %(metres)s)"
)


@functools.cache
def _boxed_query(by_asset: bool) -> str:
    return _QUERY.format(near=_NEAR_BOXED, same_asset=_SAME_ASSET if by_asset else sql.SQL("FALSE")
                         ).as_string()  # fmt: skip


def _metres(value: float) -> str:
    return f"{value:g}"


def find_original(
    conn: psycopg.Connection,
    category: Category,
    point: tuple[float, float],
    when: datetime,
    assets: list[dict[str, Any]],
) -> Original | None:
    """The open incident a new report of ``category`` at ``point`` (storage lon, lat),
    made at ``when`` and attached to ``assets``, repeats: its id, the reason in words
    ("same category within 50 m and 24 h", "same asset pipes-123 (WM-0001)"); None for a new
    problem. Call inside the intake's transaction: it serialises the intakes that could
    fuse with each other, so two reports of the same burst at once do not both dispatch."""
    # Two reports at once would not see each other's uncommitted rows: one waits here.
    # The original is locked too, so it is not closed before the duplicate joins it.
    _take_turn(conn, category, point, assets)
    hours = timedelta(hours=category.fusion_hours)
    keys = [Jsonb([{"layer": a["layer"], "id": a["id"]}]) for a in assets]
    params = {"category": category.code, "not_open": list(NOT_OPEN), "since": when - hours,
              "until": when + hours, "keys": keys, "lon": point[0], "lat": point[1],
              "metres": category.fusion_radius_m}  # fmt: skip
    box = spatial._search_box(point[0], point[1], category.fusion_radius_m)
    if box is not None:  # the usual case: a statement the server prepares once
        query: str | sql.Composable = _boxed_query(bool(keys))
        params.update(dlon=box[0], dlat=box[1])
    else:  # near a pole or the antimeridian: near_point's boxes
        near = spatial.near_point(point[0], point[1], category.fusion_radius_m)
        query = _QUERY.format(near=near, same_asset=_SAME_ASSET if keys else sql.SQL("FALSE"))
    row = conn.execute(query, params).fetchone()
    if row is None:
        return None
    original, is_near, their_assets, status = row
    if is_near:
        return Original(int(original), (
            f"same category within {_metres(category.fusion_radius_m)} m and "
            f"{_metres(category.fusion_hours)} h"
        ), status)  # fmt: skip
    theirs = {(a["layer"], a["id"]) for a in their_assets}
    shared = next(a for a in assets if (a["layer"], a["id"]) in theirs)
    name = f"{shared['layer']}-{shared['id']}"
    if shared.get("source_id"):
        name += f" ({shared['source_id']})"
    return Original(int(original), f"same asset {name}", status)
