"""The excavation check (开挖前管线查询): for a planned dig, every pipe and pipe node under it
or within a safety margin of it, with network, depth and owner, gas and power first, and
who to call before the first spade goes in.

Distances, lengths and areas are measured on the globe (geography); the dig is checked as
every area question checks its area (twin.spatial.check_area), with a smaller limit: a
dig, not a district.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import psycopg
import shapely
import shapely.geometry
from psycopg import sql
from psycopg.rows import dict_row

from twin import spatial
from twin.crs import axes, first_bad_coordinate, implausible, off_the_globe, resolve_crs, to_storage
from twin.errors import InvalidInput
from twin.schema import PIPE_NETWORKS, SRID

# The order a digger must hear of them: what burns or shocks first, then what floods,
# then what is only costly to cut.
NETWORK_ORDER = ("gas", "power", "heat", "water", "telecom", "drainage", "sewage")
assert set(NETWORK_ORDER) == set(PIPE_NETWORKS), "a network the excavation check cannot order"
DANGEROUS = ("gas", "power")
DEFAULT_MARGIN_M = 1.0
MAX_MARGIN_M = 50.0
MAX_DIG_M2 = 1_000_000.0  # 1 km²: a works area larger than this is checked in parts
MAX_LISTED = spatial.MAX_WITHIN_FEATURES  # per list; counts and the summary cover all
# Degrees around the dig's margin for the index's box: the margin is drawn in a planar
# projection (ST_Buffer on geography) and pipe edges are great circles on the globe; this
# covers both for edges up to ~95 km (as twin.spatial's _ARC_MARGIN_DEG). ST_DWithin on
# geography decides.
_BOX_DEG = 0.001


class DigTooLarge(InvalidInput):
    """A dig larger than the check takes (MAX_DIG_M2); the message says the limit."""


def dig_in_storage(area: Any, crs: str | None) -> Any:
    """The dig's polygon given in ``crs`` (None: longitude/latitude as stored; any CRS
    ``resolve_crs`` reads, GCJ-02 and BD-09 included) in the storage CRS; InvalidInput
    (option ``crs``) naming a CRS not known or coordinates that cannot be in it."""
    if crs is None or area is None or area.is_empty:
        return area  # nothing to convert; check_area says what is wrong with it
    source = resolve_crs(crs, "crs")
    if source.is_storage(SRID):
        return area
    # NaN and infinity first, named where they are: no CRS holds them.
    why = first_bad_coordinate(area, axes(source), in_degrees=False)
    if why is not None:
        raise InvalidInput(f"the area's {why}")
    given = np.array([area], dtype=object)
    wrong = implausible(given, source)[0]
    if wrong is not None:
        x, y = shapely.get_coordinates(area)[0]
        hint = " (are these degrees? then leave crs out)" if abs(x) <= 180 and abs(y) <= 90 else ""
        raise InvalidInput(f"the area cannot be in {source.name}: {wrong}{hint}", option="crs")
    stored = to_storage(shapely.force_2d(given), source, SRID)
    lost = off_the_globe(stored, source, given)[0]
    if lost is not None:
        raise InvalidInput(f"the area cannot be in {source.name}: {lost}", option="crs")
    return stored[0]


def check_margin(margin_m: float) -> float:
    """A usable safety margin in metres (0 to MAX_MARGIN_M), or InvalidInput."""
    if isinstance(margin_m, bool) or not isinstance(margin_m, int | float):
        raise InvalidInput("margin_m must be a number of metres", option="margin_m")
    if not math.isfinite(margin_m):
        raise InvalidInput("margin_m must be a finite number of metres", option="margin_m")
    if not 0 <= margin_m <= MAX_MARGIN_M:
        raise InvalidInput(
            f"margin_m {margin_m:g} is outside 0 to {MAX_MARGIN_M:g} m", option="margin_m"
        )
    return float(margin_m)


# The dig, its margin drawn around it on the globe, and what the index may skip.
_DIG = sql.SQL("""
    WITH dig AS (SELECT ST_GeomFromText(%(dig)s, 4326) AS g),
    zone AS (
        SELECT CASE WHEN %(margin)s > 0
                    THEN ST_Buffer(g::geography, %(margin)s)::geometry ELSE g END AS z
        FROM dig
    )
""")
_ORDER = sql.SQL("array_position(%(order)s::text[], f.network)")

# Depth of a pipe whose depth is not recorded: the cover over its crown (ground less
# invert less diameter, as depth_m is measured) at each end whose invert and ground are
# known, the shallower of the two (where a dig meets it first). The ground is the end
# node's, else the terrain's at the pipe's end (the latest DEM that has a value there).
_GROUND = sql.SQL("""
    COALESCE(
        (SELECT n.ground_elevation_m FROM pipe_nodes n WHERE n.id = f.{node}),
        (SELECT ST_Value(t.rast, 1, {point}) FROM terrain_tiles t
         WHERE ST_Intersects(t.rast, {point}) AND ST_Value(t.rast, 1, {point}) IS NOT NULL
         ORDER BY t.id DESC LIMIT 1)
    )
""")
_PIPES = sql.SQL(
    """
    {dig}
    SELECT * FROM (
        SELECT f.id, f.source_id, f.dataset, f.network, f.diameter_mm, f.material, f.status,
               f.depth_m AS recorded_depth,
               CASE WHEN f.depth_m IS NULL THEN LEAST(
                   CASE WHEN f.invert_start_m IS NOT NULL THEN
                       ({start_ground}) - f.invert_start_m - COALESCE(f.diameter_mm / 1000, 0)
                   END,
                   CASE WHEN f.invert_end_m IS NOT NULL THEN
                       ({end_ground}) - f.invert_end_m - COALESCE(f.diameter_mm / 1000, 0)
                   END
               ) END AS invert_depth,
               f.owner_unit, u.name AS owner_name, u.phone AS owner_phone,
               ST_Distance(f.geom::geography, dig.g::geography) AS distance_m,
               ST_Length(ST_Intersection(f.geom, zone.z)::geography) AS length_m
        FROM pipes f CROSS JOIN dig CROSS JOIN zone
        LEFT JOIN units u ON u.code = f.owner_unit
        WHERE f.geom && ST_Expand(zone.z, %(box)s)
          AND ST_DWithin(f.geom::geography, dig.g::geography, %(margin)s)
    ) f
    ORDER BY {order}, COALESCE(f.recorded_depth, f.invert_depth) NULLS LAST, f.id
    """
).format(
    dig=_DIG,
    start_ground=_GROUND.format(
        node=sql.Identifier("from_node_id"), point=sql.SQL("ST_StartPoint(f.geom)")
    ),
    end_ground=_GROUND.format(
        node=sql.Identifier("to_node_id"), point=sql.SQL("ST_EndPoint(f.geom)")
    ),
    order=_ORDER,
)
_NODES = sql.SQL(
    """
    {dig}
    SELECT f.id, f.source_id, f.dataset, f.network, f.kind, f.state, f.depth_m,
           f.owner_unit, u.name AS owner_name, u.phone AS owner_phone,
           ST_Distance(f.geom::geography, dig.g::geography) AS distance_m
    FROM pipe_nodes f CROSS JOIN dig CROSS JOIN zone
    LEFT JOIN units u ON u.code = f.owner_unit
    WHERE f.geom && ST_Expand(zone.z, %(box)s)
      AND ST_DWithin(f.geom::geography, dig.g::geography, %(margin)s)
    ORDER BY {order}, f.depth_m NULLS LAST, f.id
    """
).format(dig=_DIG, order=_ORDER)


def excavation_check(
    conn: psycopg.Connection,
    area: Any,
    *,
    margin_m: float = DEFAULT_MARGIN_M,
    crs: str | None = None,
) -> dict[str, Any]:
    """Every pipe and pipe node under the dig ``area`` (a shapely Polygon or MultiPolygon,
    in ``crs``; by default longitude/latitude) or within ``margin_m`` metres of it.

    The answer: ``area`` (the dig as GeoJSON, in longitude/latitude), ``area_m2``,
    ``margin_m``; ``pipes`` (each with its depth, ``depth_from`` saying whether it was
    recorded or worked out from inverts and ground, its ``owner`` {code, name} or None,
    ``length_m`` within the dig and its margin and ``distance_m`` from the dig, 0 under
    it) and ``nodes``, gas first, then power, heat, water, telecom, drainage, sewage,
    shallowest first within a network; ``counts`` and ``truncated`` (each list holds up to
    MAX_LISTED); ``networks``, per network in that order, the pipes, nodes and owners to
    call; ``warnings`` for a person to read before digging.

    InvalidInput for an area that is not a usable polygon or a margin outside 0 to 50 m,
    DigTooLarge for a dig over MAX_DIG_M2."""
    margin = check_margin(margin_m)
    if area is not None and area.is_empty:
        raise InvalidInput("the area is empty: give the dig's outline as a Polygon or MultiPolygon")
    dig = dig_in_storage(area, crs)
    try:
        square_metres = spatial.check_area(conn, dig, max_m2=MAX_DIG_M2)
    except spatial.AreaTooLarge as exc:
        raise DigTooLarge(
            f"the dig is {exc.square_metres:,.0f} m²; the excavation check takes digs of at "
            f"most {MAX_DIG_M2:,.0f} m² ({MAX_DIG_M2 / 1e6:g} km²): check a larger works "
            "area in parts"
        ) from None
    parameters = {"dig": dig.wkt, "margin": margin, "box": _BOX_DEG, "order": list(NETWORK_ORDER)}
    with conn.cursor(row_factory=dict_row) as cur:
        pipe_rows = cur.execute(_PIPES, parameters).fetchall()
        node_rows = cur.execute(_NODES, parameters).fetchall()
    pipes = [_pipe(row) for row in pipe_rows]
    nodes = [_node(row) for row in node_rows]
    return {
        "area": shapely.geometry.mapping(dig),
        "area_m2": round(square_metres, 1),
        "margin_m": margin,
        "pipes": pipes[:MAX_LISTED],
        "nodes": nodes[:MAX_LISTED],
        "counts": {"pipes": len(pipes), "nodes": len(nodes)},
        "truncated": len(pipes) > MAX_LISTED or len(nodes) > MAX_LISTED,
        "networks": _networks(pipe_rows, node_rows),
        "warnings": _warnings(pipes, nodes, pipe_rows, node_rows, margin),
    }


def _owner(row: dict[str, Any]) -> dict[str, Any] | None:
    """The owning unit as {code, name}; name None when the code is no unit's (the import
    keeps owners that are not known yet)."""
    if row["owner_unit"] is None:
        return None
    return {"code": row["owner_unit"], "name": row["owner_name"]}


def _metres(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def _pipe(row: dict[str, Any]) -> dict[str, Any]:
    if row["recorded_depth"] is not None:
        depth, source = row["recorded_depth"], "recorded"
    elif row["invert_depth"] is not None:
        depth, source = row["invert_depth"], "inverts and ground"
    else:
        depth, source = None, None
    return {
        "id": row["id"],
        "source_id": row["source_id"],
        "dataset": row["dataset"],
        "network": row["network"],
        "diameter_mm": row["diameter_mm"],
        "material": row["material"],
        "depth_m": _metres(depth),
        "depth_from": source,
        "status": row["status"],
        "owner": _owner(row),
        "length_m": _metres(row["length_m"]),
        "distance_m": _metres(row["distance_m"]),
    }


def _node(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "source_id": row["source_id"],
        "dataset": row["dataset"],
        "network": row["network"],
        "kind": row["kind"],
        "state": row["state"],
        "depth_m": _metres(row["depth_m"]),
        "owner": _owner(row),
        "distance_m": _metres(row["distance_m"]),
    }


def _networks(
    pipe_rows: list[dict[str, Any]], node_rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Per network under the dig, in NETWORK_ORDER: how many pipes and nodes, the length
    of pipe, and the owners to call (with their phone where the unit has one)."""
    summary: dict[str, dict[str, Any]] = {}
    for network in NETWORK_ORDER:
        pipes = [r for r in pipe_rows if r["network"] == network]
        nodes = [r for r in node_rows if r["network"] == network]
        if not pipes and not nodes:
            continue
        owners: dict[str, dict[str, Any]] = {}
        for row in pipes + nodes:
            code = row["owner_unit"]
            if code is not None and code not in owners:
                owners[code] = {
                    "code": code,
                    "name": row["owner_name"],
                    "phone": row["owner_phone"],
                }
        summary[network] = {
            "network": network,
            "pipes": len(pipes),
            "nodes": len(nodes),
            "length_m": round(sum(float(r["length_m"] or 0) for r in pipes), 2),
            "owners": sorted(owners.values(), key=lambda o: o["code"]),
            "unowned": sum(r["owner_unit"] is None for r in pipes + nodes),
        }
    return list(summary.values())


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}" if n == 1 else f"{n:,} {what}s"


def _ids(items: list[dict[str, Any]], most: int = 5) -> str:
    shown = ", ".join(str(i["source_id"] or i["id"]) for i in items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def _warnings(
    pipes: list[dict[str, Any]],
    nodes: list[dict[str, Any]],
    pipe_rows: list[dict[str, Any]],
    node_rows: list[dict[str, Any]],
    margin: float,
) -> list[str]:
    """What a person must read before digging, most dangerous first."""
    said: list[str] = []
    near = f"under the dig or within {margin:g} m of it" if margin else "under the dig"
    for network in DANGEROUS:
        found_pipes = [p for p in pipes if p["network"] == network]
        found_nodes = [n for n in nodes if n["network"] == network]
        if not found_pipes and not found_nodes:
            continue
        owners = {}
        for row in pipe_rows + node_rows:
            if row["network"] == network and row["owner_unit"] is not None:
                name = row["owner_name"] or row["owner_unit"]
                owners[name] = f"{name} ({row['owner_phone']})" if row["owner_phone"] else name
        depths = [p["depth_m"] for p in found_pipes if p["depth_m"] is not None]
        shallowest = f", the shallowest at {min(depths):g} m" if depths else ""
        call = f"call {', '.join(owners.values())} before digging" if owners else (
            "no owner is recorded: find who runs it before digging")  # fmt: skip
        said.append(
            f"{network} {near}: {_count(len(found_pipes), 'pipe')} and "
            f"{_count(len(found_nodes), 'node')}"
            f"{shallowest}; {call}"
        )
    unknown = [p for p in pipes if p["depth_m"] is None]
    if unknown:
        said.append(
            f"{_count(len(unknown), 'pipe')} of unknown depth ({_ids(unknown)}): locate "
            f"{'it' if len(unknown) == 1 else 'them'} before digging"
        )
    worked_out = [p for p in pipes if p["depth_from"] == "inverts and ground"]
    if worked_out:
        said.append(
            f"the depth of {_count(len(worked_out), 'pipe')} ({_ids(worked_out)}) is worked "
            "out from invert and ground elevations, not recorded"
        )
        no_diameter = [p for p in worked_out if p["diameter_mm"] is None]
        if no_diameter:
            said.append(
                f"{len(no_diameter)} of them ({_ids(no_diameter)}) have no diameter: their "
                "depth is to the invert, and the pipe's top is shallower"
            )
    unowned = [i for i in pipes + nodes if i["owner"] is None]
    if unowned:
        kinds = sorted({i["network"] for i in unowned}, key=NETWORK_ORDER.index)
        which = (
            "1 pipe or node has" if len(unowned) == 1 else f"{len(unowned):,} pipes or nodes have"
        )
        said.append(f"{which} no owner recorded ({', '.join(kinds)})")
    strangers = sorted({i["owner"]["code"] for i in pipes + nodes
                        if i["owner"] is not None and i["owner"]["name"] is None})  # fmt: skip
    if strangers:
        said.append(f"owner {', '.join(repr(c) for c in strangers)} is no unit's code: no "
                    "name or phone to call")  # fmt: skip
    if len(pipes) > MAX_LISTED or len(nodes) > MAX_LISTED:
        said.append(f"the lists hold the first {MAX_LISTED:,} of each; counts and networks "
                    "cover all")  # fmt: skip
    return said
