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

import hashlib
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson
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


def _turn(category: Category, point: tuple[float, float], assets: list[dict[str, Any]]
          ) -> list[int] | None:  # fmt: skip
    """The lock keys of a report's turn (the cells of its category its fusion box touches,
    and its assets), or None when it takes the whole category (see the module's notes)."""
    box = spatial._search_box(point[0], point[1], category.fusion_radius_m)
    if box is None:
        return None
    dlon, dlat = box
    west, east = math.floor((point[0] - dlon) / CELL_DEG), math.floor((point[0] + dlon) / CELL_DEG)
    south, north = (
        math.floor((point[1] - dlat) / CELL_DEG),
        math.floor((point[1] + dlat) / CELL_DEG),
    )
    if (east - west + 1) * (north - south + 1) > MAX_CELLS:
        return None
    names = [f"{category.code}|cell|{x}|{y}" for x in range(west, east + 1)
             for y in range(south, north + 1)]  # fmt: skip
    names += [f"{category.code}|asset|{a['layer']}|{a['id']}" for a in assets]
    return list(map(_key, names))


def _take_turns(conn: psycopg.Connection, asked: Sequence[Asked]) -> None:
    """Wait until no other intake that could fuse with these reports is under way, and
    hold their turns until the commit (see the module's notes). Every intake takes its
    locks in one order (the categories by code, then the cells' and assets' keys by
    value), so two intakes of several reports each never wait for each other in a circle;
    a category is held shared before its cells, so a whole-category turn waits for these
    and they for it."""
    whole: set[str] = set()
    shared: set[str] = set()
    keys: set[int] = set()
    for one in asked:
        turn = _turn(one.category, one.point, one.assets)
        if turn is None:
            whole.add(one.category.code)
        else:
            shared.add(one.category.code)
            keys.update(turn)
    codes = sorted(whole | shared)
    conn.execute(
        "SELECT count(CASE WHEN held THEN pg_advisory_xact_lock_shared(hashtextextended(code, 12))"
        " ELSE pg_advisory_xact_lock(hashtextextended(code, 12)) END)"
        " FROM unnest(%s::text[], %s::bool[]) AS u(code, held)",
        (codes, [c not in whole for c in codes]),
    )  # fmt: skip
    if keys:
        conn.execute("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS u(k)",
                     (sorted(keys),))  # fmt: skip


_QUERY = sql.SQL(
    """
    SELECT f.id, ({near}) AS near, f.assets, f.status, f.reported_at
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


def _metres(value: float) -> str:
    return f"{value:g}"


class Asked(NamedTuple):
    """What fusion asks of a report: its category, point (storage lon, lat), time and
    attached assets."""

    category: Category
    point: tuple[float, float]
    when: datetime
    assets: list[dict[str, Any]]


class Earlier(NamedTuple):
    """A report repeats one taken before it in the same intake (``index`` in the list
    given to ``find_originals``), not stored yet: the reason in words."""

    index: int
    why: str


# The open incident each report repeats, in one statement for all: the query above per
# report, in a lateral join (each report's box and circle; its assets as one array).
_MANY = """
    SELECT r.n, o.id, o.near, o.assets, o.status, o.reported_at
    FROM jsonb_to_recordset(%(asked)s::text::jsonb) AS r(n int, category text, lon float8,
         lat float8, since timestamptz, until timestamptz, metres float8, dlon float8,
         dlat float8, keys jsonb)
    CROSS JOIN LATERAL (
        SELECT f.id, f.assets, f.status, f.reported_at,
               (f.geom && ST_Expand(ST_SetSRID(ST_MakePoint(r.lon, r.lat), 4326), r.dlon, r.dlat)
                AND ST_DWithin(f.geom::geography,
                               ST_SetSRID(ST_MakePoint(r.lon, r.lat), 4326)::geography,
                               r.metres)) AS near
        FROM incidents f
        WHERE f.category_code = r.category AND f.status <> ALL(%(not_open)s)
          AND f.reported_at BETWEEN r.since AND r.until
          AND ((f.geom && ST_Expand(ST_SetSRID(ST_MakePoint(r.lon, r.lat), 4326), r.dlon, r.dlat)
                AND ST_DWithin(f.geom::geography,
                               ST_SetSRID(ST_MakePoint(r.lon, r.lat), 4326)::geography,
                               r.metres))
               OR f.assets @> ANY(ARRAY(SELECT jsonb_build_array(k)
                                        FROM jsonb_array_elements(r.keys) AS k)))
        ORDER BY f.reported_at, f.id
        LIMIT 1
        FOR UPDATE OF f
    ) AS o
"""
# Which reports of one intake lie within the fusion radius of an earlier one.
_PAIRS = """
    SELECT p.later, ST_DWithin(ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)::geography,
                               ST_SetSRID(ST_MakePoint(p.lon2, p.lat2), 4326)::geography,
                               p.metres)
    FROM unnest(%s::int[], %s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::float8[])
         WITH ORDINALITY AS p(later, lon, lat, lon2, lat2, metres, n)
    ORDER BY p.n
"""


def _asset_keys(assets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"layer": a["layer"], "id": a["id"]} for a in assets]


def _why_asset(category: Category, assets: list[dict[str, Any]], theirs: list[dict[str, Any]]
               ) -> str:  # fmt: skip
    held = {(a["layer"], a["id"]) for a in theirs}
    shared = next(a for a in assets if (a["layer"], a["id"]) in held)
    name = f"{shared['layer']}-{shared['id']}"
    if shared.get("source_id"):
        name += f" ({shared['source_id']})"
    return f"same asset {name}"


def _why_near(category: Category) -> str:
    return (f"same category within {_metres(category.fusion_radius_m)} m and "
            f"{_metres(category.fusion_hours)} h")  # fmt: skip


def find_originals(conn: psycopg.Connection, asked: Sequence[Asked]
                   ) -> list[Original | Earlier | None]:  # fmt: skip
    """For each report of one intake (in the order they are stored), the open incident it
    repeats (``Original``), or the earlier report of the same intake it repeats
    (``Earlier``: that one is stored first and is open, unless it repeats another
    itself), or None for a new problem; as ``find_original`` rules, the earliest original
    by report time. Call inside the intake's transaction: it takes the reports' turns
    first."""
    _take_turns(conn, asked)
    found: list[Original | Earlier | None] = [None] * len(asked)
    committed: dict[int, tuple[Any, ...]] = {}
    boxed = [(n, one, spatial._search_box(one.point[0], one.point[1],
                                          one.category.fusion_radius_m))
             for n, one in enumerate(asked)]  # fmt: skip
    many = [(n, one, box) for n, one, box in boxed if box is not None]
    if many:
        hours = [timedelta(hours=one.category.fusion_hours) for _, one, _ in many]
        rows = conn.execute(_MANY, {"not_open": list(NOT_OPEN), "asked": orjson.dumps([
            {"n": part, "category": one.category.code, "lon": one.point[0],
             "lat": one.point[1], "since": one.when - h, "until": one.when + h,
             "metres": one.category.fusion_radius_m, "dlon": box[0], "dlat": box[1],
             "keys": _asset_keys(one.assets)}
            for part, ((_, one, box), h) in enumerate(zip(many, hours, strict=True), start=1)
        ]).decode()}).fetchall()  # fmt: skip
        for n, *row in rows:
            committed[many[n - 1][0]] = tuple(row)
    for n, one, box in boxed:
        if box is None:  # near a pole or the antimeridian: near_point's boxes, alone
            row = _one_original(conn, one)
            if row is not None:
                committed[n] = row
    # Pairs of the same category whose times are within the window: near each other?
    pairs = [(later, earlier) for later in range(len(asked)) for earlier in range(later)
             if asked[earlier].category.code == asked[later].category.code
             and abs(asked[earlier].when - asked[later].when)
             <= timedelta(hours=asked[later].category.fusion_hours)]  # fmt: skip
    near: dict[tuple[int, int], bool] = {}
    if pairs:
        answers = conn.execute(_PAIRS, (
            [later for later, _ in pairs], [asked[later].point[0] for later, _ in pairs],
            [asked[later].point[1] for later, _ in pairs],
            [asked[earlier].point[0] for _, earlier in pairs],
            [asked[earlier].point[1] for _, earlier in pairs],
            [asked[later].category.fusion_radius_m for later, _ in pairs],
        )).fetchall()  # fmt: skip
        near = {pair: bool(row[1]) for pair, row in zip(pairs, answers, strict=True)}
    for n, one in enumerate(asked):
        best: tuple[datetime, int, int] | None = None  # time, 0 committed / 1 here, which
        row = committed.get(n)
        if row is not None:
            when = row[4]
            best = (when, 0, 0)
        mine = {(a["layer"], a["id"]) for a in one.assets}
        for earlier in range(n):
            if (n, earlier) not in near or found[earlier] is not None:
                continue  # another category or time, or itself a duplicate (not open)
            theirs = {(a["layer"], a["id"]) for a in asked[earlier].assets}
            if not near[(n, earlier)] and not mine & theirs:
                continue
            # Stored after every committed incident (a later id): a tie in time goes to those.
            if best is None or (asked[earlier].when, 1, earlier) < best:
                best = (asked[earlier].when, 1, earlier)
        if best is None:
            continue
        if best[1] == 0:
            original, is_near, their_assets, status, _ = row  # type: ignore[misc]
            why = (_why_near(one.category) if is_near
                   else _why_asset(one.category, one.assets, their_assets))  # fmt: skip
            found[n] = Original(int(original), why, status)
        else:
            earlier = best[2]
            why = (_why_near(one.category) if near[(n, earlier)]
                   else _why_asset(one.category, one.assets, asked[earlier].assets))  # fmt: skip
            found[n] = Earlier(earlier, why)
    return found


def _one_original(conn: psycopg.Connection, one: Asked) -> tuple[Any, ...] | None:
    """``_QUERY`` for one report near a pole or the antimeridian (near_point's boxes)."""
    hours = timedelta(hours=one.category.fusion_hours)
    keys = [Jsonb([k]) for k in _asset_keys(one.assets)]
    params = {"category": one.category.code, "not_open": list(NOT_OPEN),
              "since": one.when - hours, "until": one.when + hours, "keys": keys}  # fmt: skip
    near = spatial.near_point(one.point[0], one.point[1], one.category.fusion_radius_m)
    query = _QUERY.format(near=near, same_asset=_SAME_ASSET if keys else sql.SQL("FALSE"))
    return conn.execute(query, params).fetchone()


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
    found = find_originals(conn, [Asked(category, point, when, assets)])[0]
    assert not isinstance(found, Earlier)
    return found
