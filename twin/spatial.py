"""The one-map questions: what is here (locate), what is near (nearest), what is inside an
area (within), and what lies below (below). Points and areas come in the storage CRS
(lon/lat); distances and depths go out in metres.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson
import psycopg
import shapely
from psycopg import sql
from psycopg.rows import dict_row

from twin import registry
from twin.crs import first_bad_coordinate
from twin.errors import InvalidInput, NotFound

PIPE_SEARCH_M = 5.0  # pipes this close to a point count as beneath it
MAX_K = 100
MAX_DISTANCE_M = 20_000.0
MAX_AREA_M2 = 50_000_000.0  # 50 km²: a district, not a province
MAX_WITHIN_FEATURES = 5_000
MAX_AREA_VERTICES = 20_000
MAX_RADIUS_M = 5_000.0


def check_point(lon: float, lat: float) -> None:
    """A usable longitude/latitude, or InvalidInput saying what is wrong."""
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise InvalidInput("lon and lat must be finite numbers")
    if not -90 <= lat <= 90:
        hint = " (are lon and lat swapped?)" if -180 <= lat <= 180 and -90 <= lon <= 90 else ""
        raise InvalidInput(f"lat {lat} is beyond ±90{hint}")
    if not -180 <= lon <= 180:
        raise InvalidInput(f"lon {lon} is beyond ±180")


def check_layers(conn: psycopg.Connection, layers: list[str]) -> dict[str, registry.Layer]:
    """Each feature layer named, by name (built-in or scene); InvalidInput naming unknown
    ones and the layers there are."""
    return {layer.name: layer for layer in registry.resolve_feature_layers(conn, layers)}


def _summary(columns: tuple[str, ...], alias: str = "f") -> sql.Composable:
    """What a person wants to see of a feature: a layer's summary columns, or (none) all
    properties of a scene (they are its schema)."""
    if not columns:
        return sql.SQL("{}.properties").format(sql.Identifier(alias))
    pairs: list[sql.Composable] = []
    for column in columns:
        pairs += [
            sql.Literal(column),
            sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(column)),
        ]
    return sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(pairs))


@functools.cache
def _locate_query() -> str:
    """locate's statement, composed once: composing it each time took longer than the
    server takes to run it. Placeholders, not literals: the text repeats, so psycopg
    prepares it once per connection and the server skips planning on every later call."""
    query = sql.SQL(
        """
        WITH here AS (SELECT ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326) AS p),
        chain AS (
            SELECT j.code, j.name, j.level FROM jurisdictions j, here
            WHERE j.geom && here.p AND ST_Intersects(j.geom, here.p)
        )
        SELECT
          (SELECT COALESCE(jsonb_agg(jsonb_build_object('level', level, 'code', code, 'name', name)
                   ORDER BY array_position(ARRAY['city','district','street','grid','community'], level)), '[]')
           FROM chain) AS jurisdictions,
          (SELECT COALESCE(jsonb_agg({unit} ORDER BY u.code), '[]') FROM units u
           WHERE u.jurisdiction_code IN (SELECT code FROM chain)) AS units,
          (SELECT {building} || jsonb_build_object('id', f.id) FROM buildings f, here
           WHERE f.geom && here.p AND ST_Intersects(f.geom, here.p) LIMIT 1) AS building,
          (SELECT COALESCE(jsonb_agg({space} || jsonb_build_object('id', f.id)), '[]')
           FROM public_spaces f, here
           WHERE f.geom && here.p AND ST_Intersects(f.geom, here.p)) AS public_spaces,
          (SELECT COALESCE(jsonb_agg(x.pipe ORDER BY x.depth NULLS LAST), '[]') FROM (
             SELECT {pipe} || jsonb_build_object('id', f.id, 'distance_m',
                      round(ST_Distance(f.geom::geography, here.p::geography)::numeric, 2)) AS pipe,
                    f.depth_m AS depth
             FROM pipes f, here
             WHERE f.geom && ST_Expand(here.p, {degrees})
               AND ST_DWithin(f.geom::geography, here.p::geography, {metres})) x) AS pipes_beneath
        """
    ).format(
        unit=_summary(registry.BUILTIN["units"].summary, "u"),
        building=_summary(registry.BUILTIN["buildings"].summary),
        space=_summary(registry.BUILTIN["public_spaces"].summary),
        pipe=_summary(registry.BUILTIN["pipes"].summary),
        degrees=sql.Literal(PIPE_SEARCH_M / 80_000),  # metres to degrees, generously
        metres=sql.Literal(PIPE_SEARCH_M),
    )
    return query.as_string()


_CHAIN_QUERY = """
    SELECT j.code, j.name, j.level FROM jurisdictions j
    WHERE j.geom && ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)
      AND ST_Intersects(j.geom, ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326))
    ORDER BY array_position(ARRAY['city','district','street','grid','community'], j.level), j.code
"""


def jurisdiction_chain(conn: psycopg.Connection, lon: float, lat: float) -> list[dict[str, Any]]:
    """The jurisdictions the point lies in, at every level present, highest first (as
    ``locate`` lists them; a tree may skip levels): each ``{code, name, level}``."""
    check_point(lon, lat)
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(_CHAIN_QUERY, {"lon": lon, "lat": lat}))


def locate(conn: psycopg.Connection, lon: float, lat: float) -> dict[str, Any]:
    """Jurisdiction at every level, the units there, and what is at or under the point."""
    check_point(lon, lat)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_locate_query(), {"lon": lon, "lat": lat}).fetchone()
    assert row is not None
    inside = bool(row["jurisdictions"])
    answer: dict[str, Any] = {"lon": lon, "lat": lat, "inside": inside, **row}
    if not inside:
        answer["message"] = "this point lies outside every jurisdiction the one map knows"
    return answer


def nearest(
    conn: psycopg.Connection,
    lon: float,
    lat: float,
    *,
    layers: list[str],
    k: int = 5,
    max_distance_m: float | None = None,
    columns: tuple[str, ...] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The k nearest features per layer, with distances in metres, nearest first.

    ``properties`` are each layer's summary, or with ``columns`` those of its public
    columns (the others are left out: a scene has no owner_unit column)."""
    check_point(lon, lat)
    tables = check_layers(conn, layers)
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be from 1 to {MAX_K}")
    if max_distance_m is not None and not 0 < max_distance_m <= MAX_DISTANCE_M:
        raise InvalidInput(f"max_distance must be more than 0 and at most {MAX_DISTANCE_M:g} m")
    box = None if max_distance_m is None else _search_box(lon, lat, max_distance_m)
    answer: dict[str, list[dict[str, Any]]] = {}
    for name, layer in tables.items():
        parameters = {
            "lon": lon,
            "lat": lat,
            "max": max_distance_m,
            "candidates": k * 2 + 10,
            "k": k,
            "dlon": box and box[0],
            "dlat": box and box[1],
        }
        shown = layer.summary
        if columns is not None:
            shown = tuple(c for c in columns if c in layer.public_columns)
        query = _nearest_query(
            layer.table, layer.id_column, shown, max_distance_m is not None, box is not None
        )
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query, parameters).fetchall()
            if rows and not _candidates_suffice(rows, parameters["candidates"], lon, lat):
                # The index ranks by distance in degrees, which far from the equator or
                # across the antimeridian is not the order on the globe: every feature
                # nearer than the k-th found is within that distance, so ask for those.
                farthest = float(rows[-1]["distance_m"]) + 0.01
                rows = cur.execute(_exact_nearest(layer, lon, lat, farthest, k, shown)).fetchall()
        answer[name] = [
            {"id": r["id"], "properties": r["properties"], "geometry": r["geometry"],
             "distance_m": round(float(r["distance_m"]), 2)}
            for r in rows
        ]  # fmt: skip
    return answer


def nearest_within(
    conn: psycopg.Connection,
    lon: float,
    lat: float,
    *,
    layers: list[str],
    k: int,
    max_distance_m: float,
    columns: tuple[str, ...],
    networks: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """As ``nearest`` with ``max_distance_m`` and ``columns``, the same features in the
    same order, without their geometry: for callers that want only what is near (intake's
    attach), in one statement for all the layers. ``networks``: a layer (pipes, pipe
    nodes) held to the features of those networks."""
    networks = dict(networks or {})
    check_point(lon, lat)
    tables = check_layers(conn, layers)
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be from 1 to {MAX_K}")
    if not 0 < max_distance_m <= MAX_DISTANCE_M:
        raise InvalidInput(f"max_distance must be more than 0 and at most {MAX_DISTANCE_M:g} m")
    box = _search_box(lon, lat, max_distance_m)
    if box is None:  # near a pole or the antimeridian: nearest's way, layer by layer
        wide = MAX_K if networks else k  # held to networks: filtered after, from the most
        found = nearest(conn, lon, lat, layers=layers, k=wide, max_distance_m=max_distance_m,
                        columns=(*columns, "network") if networks else columns)  # fmt: skip
        return {
            name: [{**f, "geometry": None} for f in rows
                   if name not in networks or f["properties"].get("network") in networks[name]][:k]
            for name, rows in found.items()
        }  # fmt: skip
    shapes = tuple(
        (
            layer.table,
            layer.id_column,
            tuple(c for c in columns if c in layer.public_columns),
            name in networks,
        )
        for name, layer in tables.items()
    )
    parameters = {**{f"networks{n}": list(networks[name]) for n, name in enumerate(tables)
                     if name in networks},
                  "lon": lon, "lat": lat, "max": max_distance_m, "candidates": k * 2 + 10,
                  "k": k, "dlon": box[0], "dlat": box[1],
                  # A planar reach in degrees no feature within the metres lies beyond:
                  # its point nearest on the globe is in the box, the planar edge through
                  # it within the arc's bulge. Cheap before the geodesic test, which on a
                  # long road polygon is the costly part.
                  "degrees": math.hypot(*box) + _ARC_MARGIN_DEG}  # fmt: skip
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_nearest_within_query(shapes), parameters).fetchall()
        by_layer: list[list[dict[str, Any]]] = [[] for _ in shapes]
        for row in rows:
            by_layer[row["n"]].append(row)
        answer: dict[str, list[dict[str, Any]]] = {}
        for (name, layer), found, (_, _, shown, _) in zip(tables.items(), by_layer, shapes,
                                                          strict=True):  # fmt: skip
            if found and not _candidates_suffice(found, parameters["candidates"], lon, lat):
                farthest = float(found[-1]["distance_m"]) + 0.01  # as nearest does
                found = cur.execute(
                    _exact_nearest(layer, lon, lat, farthest, k, shown, networks.get(name))
                ).fetchall()
            answer[name] = [
                {"id": r["id"], "properties": r["properties"], "geometry": None,
                 "distance_m": round(float(r["distance_m"]), 2)}
                for r in found
            ]  # fmt: skip
    return answer


@functools.lru_cache(maxsize=256)
def _nearest_within_query(shapes: tuple[tuple[str, str, tuple[str, ...], bool], ...]) -> str:
    """nearest_within's statement for layers (table, key column, columns shown, held to
    networks), composed once: each layer's part is _nearest_query's (boxed, within the
    distance), numbered ``n`` in the order given."""
    point = sql.SQL("ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)")
    parts = [
        sql.SQL(
            """
            (SELECT {n} AS n, * FROM (
              SELECT *, max(degrees) OVER () AS reach, count(*) OVER () AS found FROM (
                SELECT f.{key}::text AS id, {summary} AS properties,
                       ST_Distance(f.geom::geography, {point}::geography) AS distance_m,
                       f.geom <-> {point} AS degrees
                FROM {table} f
                WHERE f.geom IS NOT NULL AND f.geom && ST_Expand({point}, %(dlon)s, %(dlat)s)
                  AND ST_DWithin(f.geom, {point}, %(degrees)s){held}
                  AND ST_DWithin(f.geom::geography, {point}::geography, %(max)s)
                ORDER BY f.geom <-> {point}
                LIMIT %(candidates)s
              ) c ORDER BY distance_m LIMIT %(k)s
            ) c)
            """
        ).format(
            n=sql.Literal(n),
            key=sql.Identifier(key),
            summary=_summary(shown),
            point=point,
            table=sql.Identifier(table),
            held=sql.SQL(" AND f.network = ANY({})").format(sql.Placeholder(f"networks{n}"))
            if held
            else sql.SQL(""),
        )
        for n, (table, key, shown, held) in enumerate(shapes)
    ]
    return (sql.SQL(" UNION ALL ").join(parts) + sql.SQL(" ORDER BY n, distance_m")).as_string()


class Near(NamedTuple):
    """One point's question of ``nearest_within_many``: the nearest of ``layers`` within
    ``max_distance_m``, those of ``networks`` where a layer is held to some."""

    lon: float
    lat: float
    layers: list[str]
    max_distance_m: float
    networks: Mapping[str, tuple[str, ...]] | None = None


def nearest_within_many(
    conn: psycopg.Connection, asked: Sequence[Near], *, k: int, columns: tuple[str, ...]
) -> list[dict[str, list[dict[str, Any]]]]:
    """``nearest_within`` for several points at once (intake's reports taken together),
    the same answers in the order asked (features at the same distance by id, where
    ``nearest_within`` takes the index's order): each layer's part one lateral join over
    the points that ask it, one statement for all."""
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be from 1 to {MAX_K}")
    answers: list[dict[str, list[dict[str, Any]]] | None] = [None] * len(asked)
    tables: dict[str, registry.Layer] = {}
    # Per layer: its points' rows (n, lon, lat, max, the box (dlon, dlat) and planar reach
    # (degrees) of the features of small span (points: of all), networks, and the box
    # and reach of the wide ones, with the full margin).
    wanted: dict[str, list[tuple[Any, ...]]] = {}
    for n, one in enumerate(asked):
        check_point(one.lon, one.lat)
        if not 0 < one.max_distance_m <= MAX_DISTANCE_M:
            raise InvalidInput(f"max_distance must be more than 0 and at most {MAX_DISTANCE_M:g} m")
        box = _search_box(one.lon, one.lat, one.max_distance_m)
        if box is None:  # near a pole or the antimeridian: alone, nearest's way
            answers[n] = nearest_within(conn, one.lon, one.lat, layers=one.layers, k=k,
                                        max_distance_m=one.max_distance_m, columns=columns,
                                        networks=one.networks)  # fmt: skip
            continue
        narrow = {margin: _search_box(one.lon, one.lat, one.max_distance_m, margin) or box
                  for margin in (0.0, _SMALL_ARC_MARGIN_DEG)}  # fmt: skip
        networks = dict(one.networks or {})
        answers[n] = {}
        for name, layer in check_layers(conn, one.layers).items():
            tables[name] = layer
            answers[n][name] = []  # type: ignore[index]
            held = networks.get(name)
            # A planar reach in degrees no feature within the metres lies beyond: its
            # point nearest on the globe is in the box, the planar edge through it within
            # the arc's bulge (the margin).
            margin = 0.0 if layer.family == "point" else _SMALL_ARC_MARGIN_DEG
            small = narrow[margin]
            wanted.setdefault(name, []).append((
                n, one.lon, one.lat, one.max_distance_m, small[0], small[1],
                math.hypot(*small) + margin, None if held is None else ",".join(held),
                box[0], box[1], math.hypot(*box) + _ARC_MARGIN_DEG,
            ))  # fmt: skip
    if not wanted:
        return answers  # type: ignore[return-value]
    names = list(wanted)
    shapes = tuple(
        (tables[name].table, tables[name].id_column,
         tuple(c for c in columns if c in tables[name].public_columns),
         any(row[7] is not None for row in wanted[name]), tables[name].family != "point")
        for name in names
    )  # fmt: skip
    parameters: dict[str, Any] = {"candidates": k * 2 + 10, "k": k}
    fields = ("n", "lon", "lat", "max", "dlon", "dlat", "degrees", "networks", "wlon", "wlat",
              "wdegrees")  # fmt: skip
    for part, name in enumerate(names):  # one JSON text a layer: far cheaper to send than arrays
        parameters[f"points{part}"] = orjson.dumps(
            [dict(zip(fields, row, strict=True)) for row in wanted[name]]).decode()  # fmt: skip
    found: dict[tuple[int, int], list[dict[str, Any]]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(_nearest_within_many_query(shapes), parameters).fetchall():
            found.setdefault((row["n"], row["part"]), []).append(row)
        for (n, part), rows in found.items():
            name, one = names[part], asked[n]
            rows.sort(key=lambda r: (r["distance_m"], r["id"]))
            if not _candidates_suffice(rows, parameters["candidates"], one.lon, one.lat):
                farthest = float(rows[-1]["distance_m"]) + 0.01  # as nearest does
                held = dict(one.networks or {}).get(name)
                rows = cur.execute(_exact_nearest(tables[name], one.lon, one.lat, farthest, k,
                                                  shapes[part][2], held)).fetchall()  # fmt: skip
            answers[n][name] = [  # type: ignore[index]
                {"id": r["id"], "properties": r["properties"], "geometry": None,
                 "distance_m": round(float(r["distance_m"]), 2)}
                for r in rows
            ]  # fmt: skip
    return answers  # type: ignore[return-value]


@functools.lru_cache(maxsize=256)
def _nearest_within_many_query(
    shapes: tuple[tuple[str, str, tuple[str, ...], bool, bool], ...],
) -> str:
    """nearest_within_many's statement for layers (table, key column, columns shown, any
    point held to networks, whether features have edges): each layer's part
    nearest_within's, in a lateral join over the rows of its points (parameter
    ``points{part}``, JSON), numbered ``part``. A layer of lines or polygons takes its
    candidates from two scans, merged in the index's order: every feature in the narrow
    box, and the features of wide span (``WIDE_SPAN``) the narrow box cannot hold that
    lie in the wide one."""
    point = sql.SQL("ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)")
    parts = []
    for part, (table, key, shown, held, edges) in enumerate(shapes):
        # The geodesic distance computed once a candidate (OFFSET 0 keeps the test on it
        # out of the scan, where it would be computed again): on a road's polygon of a
        # few hundred vertices it costs half a millisecond, the planar tests a hundredth.
        scan = sql.SQL(
            """
                SELECT * FROM (
                  SELECT f.{key}::text AS id, {summary} AS properties,
                         ST_Distance(f.geom::geography, {point}::geography) AS distance_m,
                         f.geom <-> {point} AS degrees
                  FROM {table} f
                  WHERE f.geom IS NOT NULL AND {where}{held}
                  ORDER BY f.geom <-> {point}
                  OFFSET 0
                ) s WHERE s.distance_m <= p.max
                LIMIT %(candidates)s
            """
        )
        narrow = sql.SQL("f.geom && ST_Expand({point}, p.dlon, p.dlat)"
                         " AND ST_DWithin(f.geom, {point}, p.degrees)").format(point=point)  # fmt: skip
        wide = sql.SQL(
            "{span} AND f.geom && ST_Expand({point}, p.wlon, p.wlat)"
            " AND ST_DWithin(f.geom, {point}, p.wdegrees) AND NOT ({narrow})"
        ).format(span=sql.SQL(WIDE_SPAN.replace("geom", "f.geom")), point=point, narrow=narrow)
        common = {
            "key": sql.Identifier(key), "summary": _summary(shown), "point": point,
            "table": sql.Identifier(table),
            "held": sql.SQL(" AND (p.networks IS NULL OR f.network = ANY(string_to_array("
                            "p.networks, ',')))") if held else sql.SQL(""),
        }  # fmt: skip
        candidates = scan.format(where=narrow, **common)
        if edges:
            candidates = sql.SQL(
                "SELECT * FROM (({}) UNION ALL ({})) u ORDER BY degrees LIMIT %(candidates)s"
            ).format(candidates, scan.format(where=wide, **common))
        parts.append(sql.SQL(
            """
            (SELECT p.n, {part} AS part, c.* FROM jsonb_to_recordset({points}::text::jsonb)
                AS p(n int, lon float8, lat float8, max float8, dlon float8, dlat float8,
                     degrees float8, networks text, wlon float8, wlat float8,
                     wdegrees float8)
             CROSS JOIN LATERAL (
              SELECT *, max(degrees) OVER () AS reach, count(*) OVER () AS found FROM (
                {candidates}
              ) c ORDER BY distance_m, id LIMIT %(k)s
             ) c)
            """
        ).format(part=sql.Literal(part), points=sql.Placeholder(f"points{part}"),
                 candidates=candidates))  # fmt: skip
    return sql.SQL(" UNION ALL ").join(parts).as_string()


def _candidates_suffice(
    rows: list[dict[str, Any]], candidates: int, lon: float, lat: float
) -> bool:
    """Whether the index's candidates surely hold the k nearest on the globe: fewer came
    than were asked for (so they are all there is), or every feature beyond them, at
    least ``reach`` degrees away, is farther in metres than the k-th found."""
    if int(rows[0]["found"]) < candidates:
        return True
    reach = float(rows[0]["reach"])
    farthest_lat = abs(lat) + reach
    if farthest_lat >= 89.0:
        return False
    # The fewest metres a degree spans anywhere within reach: one of longitude at the
    # farthest latitude (the ellipsoid's is a little more), with a margin.
    fewest = _METRES_PER_DEGREE_LON_EQUATOR * math.cos(math.radians(farthest_lat)) * 0.99
    metres = float(rows[-1]["distance_m"])
    across = abs(lon) + metres / fewest >= 180  # the antimeridian within reach
    return not across and metres < reach * fewest


def _exact_nearest(
    layer: registry.Layer,
    lon: float,
    lat: float,
    metres: float,
    k: int,
    shown: tuple[str, ...],
    networks: tuple[str, ...] | None = None,
) -> sql.Composable:
    """The k features nearest the point on the globe among those within ``metres`` (of
    those ``networks`` when given)."""
    key = sql.Identifier(layer.id_column)
    point = sql.SQL("ST_SetSRID(ST_MakePoint({}, {}), 4326)").format(
        sql.Literal(lon), sql.Literal(lat)
    )
    return sql.SQL(
        "SELECT f.{key}::text AS id, {summary} AS properties,"
        " ST_AsGeoJSON(f.geom, 7, 0)::jsonb AS geometry,"
        " ST_Distance(f.geom::geography, {point}::geography) AS distance_m"
        " FROM {table} f WHERE {near}{held} ORDER BY distance_m, f.{key} LIMIT {k}"
    ).format(
        key=key, summary=_summary(shown), point=point, table=sql.Identifier(layer.table),
        near=near_point(lon, lat, metres), k=sql.Literal(k),
        held=sql.SQL(" AND f.network = ANY({})").format(sql.Literal(list(networks)))
        if networks else sql.SQL(""),
    )  # fmt: skip


# Metres in a degree, at their fewest on the WGS84/CGCS2000 ellipsoid: of latitude (the
# meridian at the equator), and of longitude at latitude φ (at least a·cos φ per radian).
_METRES_PER_DEGREE_LAT = 110_574.0
_METRES_PER_DEGREE_LON_EQUATOR = 111_319.0
# A geography edge is a great-circle arc, which bulges poleward of its vertices' box: by
# under 0.001° for edges up to 95 km long at 31° (Shanghai), 55 km at 60°. (The demo's
# longest edge is 3.9 km.)
_ARC_MARGIN_DEG = 0.001
# The bulge is under 0.025 L² degrees for an edge L degrees long (lon/lat), at any
# latitude up to 86° (0.0013 L² at 31°), so a feature whose box spans (width plus height)
# at most _SMALL_SPAN_DEG has no edge that bulges more than _SMALL_ARC_MARGIN_DEG
# (0.025 × 0.06² < 0.0001): attach searches those, nearly every feature, in a box with
# that margin, ten times narrower than _ARC_MARGIN_DEG (around a 30 m circle, 1/20 of the
# area, and as many fewer geodesic tests); the few wider ones (a long road's polygon) in
# the box with the full margin, through a partial index of them (migration 0011).
# Points have no edges: their box needs no margin at all.
_SMALL_SPAN_DEG = 0.06
_SMALL_ARC_MARGIN_DEG = 0.0001
# A feature's span as the partial indexes' predicate reads it (the same text, so the
# planner uses them).
WIDE_SPAN = (
    f"(ST_XMax(geom) - ST_XMin(geom)) + (ST_YMax(geom) - ST_YMin(geom)) > {_SMALL_SPAN_DEG:g}"
)


def _search_box(lon: float, lat: float, metres: float, margin: float = _ARC_MARGIN_DEG
                ) -> tuple[float, float] | None:  # fmt: skip
    """Half width and height in degrees of a lon/lat box around the point holding every
    feature within ``metres`` of it on the ellipsoid (whose edges bulge by at most
    ``margin`` degrees); None near a pole or the antimeridian, where no such box is simple
    (those points are searched without it)."""
    dlat = metres / _METRES_PER_DEGREE_LAT * 1.01 + margin
    farthest = abs(lat) + dlat
    if farthest >= 85:
        return None
    dlon = (
        metres / (_METRES_PER_DEGREE_LON_EQUATOR * math.cos(math.radians(farthest))) * 1.01 + margin
    )
    if lon - dlon < -180 or lon + dlon > 180:
        return None
    return dlon, dlat


@functools.lru_cache(maxsize=256)
def _nearest_query(
    table: str, key: str, summary: tuple[str, ...], within_max_distance: bool, boxed: bool
) -> str:
    """nearest's statement for one layer, composed once (as locate's)."""
    # Index-assisted KNN on the planar distance, then the true metric distance on a
    # few more candidates than asked, so the order in metres is right. Within a distance,
    # a box around the point that holds every feature within it lets the index skip the
    # rest: the geography test alone cannot use it, and the scan walked the whole table
    # wherever fewer than the candidates lay within the distance.
    point = sql.SQL("ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)")
    within = sql.SQL("")
    if within_max_distance:
        within = sql.SQL("AND ST_DWithin(f.geom::geography, {}::geography, %(max)s)").format(point)
    if within_max_distance and boxed:
        within = sql.SQL("AND f.geom && ST_Expand({}, %(dlon)s, %(dlat)s) {}").format(point, within)
    query = sql.SQL(
        """
        SELECT *, max(degrees) OVER () AS reach, count(*) OVER () AS found FROM (
          SELECT f.{key}::text AS id, {summary} AS properties,
                 ST_AsGeoJSON(f.geom, 7, 0)::jsonb AS geometry,
                 ST_Distance(f.geom::geography, {point}::geography) AS distance_m,
                 f.geom <-> {point} AS degrees
          FROM {table} f
          WHERE f.geom IS NOT NULL {within}
          ORDER BY f.geom <-> {point}
          LIMIT %(candidates)s
        ) c ORDER BY distance_m LIMIT %(k)s
        """
    ).format(
        key=sql.Identifier(key), summary=_summary(summary), point=point,
        table=sql.Identifier(table), within=within,
    )  # fmt: skip
    return query.as_string()


def check_radius(radius_m: float) -> None:
    """A usable search radius in metres, or InvalidInput saying what is wrong."""
    if not math.isfinite(radius_m):
        raise InvalidInput("radius must be a finite number of metres")
    if not 0 < radius_m <= MAX_RADIUS_M:
        raise InvalidInput(f"radius must be more than 0 and at most {MAX_RADIUS_M:g} m")


def near_point(lon: float, lat: float, metres: float) -> sql.Composable:
    """Features within ``metres`` of the point by geodesic distance on the spheroid. The
    index finds candidates in a lon/lat box around the circle (two boxes where it crosses
    the antimeridian); ST_DWithin on geography decides exactly."""
    # The box _search_box makes, with its margin for a great circle's bulge.
    dlat = metres / _METRES_PER_DEGREE_LAT * 1.01 + _ARC_MARGIN_DEG
    farthest = math.radians(min(abs(lat) + dlat, 90))
    dlon = min(
        metres / (_METRES_PER_DEGREE_LON_EQUATOR * max(math.cos(farthest), 1e-6)) * 1.01
        + _ARC_MARGIN_DEG,
        180,
    )
    point = sql.SQL("ST_SetSRID(ST_MakePoint({}, {}), 4326)").format(
        sql.Literal(lon), sql.Literal(lat)
    )
    boxes = [(lon - dlon, lon + dlon)]
    if abs(lat) + dlat >= 90 or dlon >= 180:  # a pole within reach: every longitude is
        boxes = [(-180, 180)]
    elif lon - dlon < -180:
        boxes = [(-180, lon + dlon), (lon - dlon + 360, 180)]
    elif lon + dlon > 180:
        boxes = [(lon - dlon, 180), (-180, lon + dlon - 360)]
    candidates = sql.SQL(" OR ").join(
        sql.SQL("f.geom && ST_MakeEnvelope({}, {}, {}, {}, 4326)").format(
            sql.Literal(west),
            sql.Literal(max(lat - dlat, -90)),
            sql.Literal(east),
            sql.Literal(min(lat + dlat, 90)),
        )
        for west, east in boxes
    )
    return sql.SQL("({}) AND ST_DWithin(f.geom::geography, {}::geography, {})").format(
        candidates, point, sql.Literal(metres)
    )


def invalid_reason(area: Any) -> str:
    """GEOS's reason a polygon is invalid ("Self-intersection[121.4 31.2]"), in words."""
    reason = shapely.is_valid_reason(area)
    place = re.search(r"\[([-\d.e+]+) ([-\d.e+]+)\]", reason)
    at = f" at {place[1]}, {place[2]}" if place else ""
    words = {"Ring Self-intersection": "a ring touches itself", "Self-intersection":
             "its boundary crosses itself", "Too few points": "a ring has too few points",
             "Hole lies outside shell": "a hole lies outside its polygon",
             "Nested holes": "a hole lies inside another hole",
             "Interior is disconnected": "its holes cut it in pieces",
             "Nested shells": "one polygon lies inside another"}  # fmt: skip
    kind = next((w for k, w in words.items() if reason.startswith(k)), "its rings are not valid")
    return kind + at


class AreaTooLarge(InvalidInput):
    """An area larger than the question takes (``square_metres`` over ``limit_m2``)."""

    def __init__(self, message: str, *, square_metres: float, limit_m2: float) -> None:
        super().__init__(message)
        self.square_metres = square_metres
        self.limit_m2 = limit_m2


def check_area(conn: psycopg.Connection, area: Any, *, max_m2: float = MAX_AREA_M2) -> float:
    """The area in m²; InvalidInput when it is not a usable polygon, AreaTooLarge when it
    is larger than ``max_m2`` (a question that takes less than a district says so)."""
    if area is None or area.is_empty or area.geom_type not in ("Polygon", "MultiPolygon"):
        raise InvalidInput("the area must be a Polygon or MultiPolygon")
    why = first_bad_coordinate(area)  # "coordinate 2 of ring 0: longitude inf is not …"
    if why is not None:
        raise InvalidInput(f"the area's {why}")
    if not area.is_valid:
        raise InvalidInput(f"the area is not a valid polygon: {invalid_reason(area)}")
    west, _, east, _ = area.bounds
    if east - west > 180:
        # Longitudes spanning more than half the world are read the short way round by
        # geography but the long way by the index: refuse rather than answer both ways.
        raise InvalidInput("the area spans more than 180° of longitude (across the antimeridian?)")
    if shapely.get_num_coordinates(area) > MAX_AREA_VERTICES:
        raise InvalidInput(f"the area has more than {MAX_AREA_VERTICES:,} vertices: simplify it")
    try:
        with conn.transaction():
            square_metres = conn.execute(
                "SELECT ST_Area(ST_GeomFromText(%s, 4326)::geography)", (area.wkt,)
            ).fetchone()[0]  # type: ignore[index]
    except psycopg.errors.InternalError_ as exc:  # PostGIS: antipodal edges and the like
        raise InvalidInput("the area cannot be measured on the globe (edges too long)") from exc
    if square_metres > max_m2:
        raise AreaTooLarge(
            f"the area is {square_metres / 1e6:,.1f} km²; at most {max_m2 / 1e6:,.0f} km² is searched",
            square_metres=float(square_metres),
            limit_m2=max_m2,
        )
    return float(square_metres)


def _intersecting(
    conn: psycopg.Connection,
    layer: registry.Layer,
    match: sql.Composable,
    *,
    limit: int,
    order: sql.Composable,
) -> tuple[list[dict[str, Any]], int]:
    """Up to ``limit`` features of ``layer`` that ``match`` (SQL on ``f``), and how many."""
    key = layer.id_column
    table = sql.Identifier(layer.table)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            sql.SQL(
                "SELECT f.{key}::text AS id, {summary} AS properties,"
                " ST_AsGeoJSON(f.geom, 7, 0)::jsonb AS geometry FROM {table} f"
                " WHERE {match} ORDER BY {order} LIMIT {limit}"
            ).format(
                key=sql.Identifier(key),
                summary=_summary(layer.summary),
                table=table,
                match=match,
                order=order,
                limit=sql.Literal(limit),
            )
        ).fetchall()
        count = cur.execute(
            sql.SQL("SELECT count(*) AS n FROM {} f WHERE {}").format(table, match)
        ).fetchone()["n"]  # type: ignore[index]
    return rows, int(count)


def _in_area(area: Any) -> sql.Composable:
    shape = sql.SQL("ST_GeomFromText({}, 4326)").format(sql.Literal(area.wkt))
    return sql.SQL("f.geom && {0} AND ST_Intersects(f.geom, {0})").format(shape)


def within(
    conn: psycopg.Connection, area: Any, *, layers: list[str], limit: int = 1000
) -> dict[str, Any]:
    """Features of the chosen layers that intersect the area, with counts by layer."""
    tables = check_layers(conn, layers)
    _check_limit(limit)
    square_metres = check_area(conn, area)
    return _within_answer(conn, _in_area(area), square_metres, tables, limit)


def within_radius(
    conn: psycopg.Connection,
    lon: float,
    lat: float,
    radius_m: float,
    *,
    layers: list[str],
    limit: int = 1000,
) -> dict[str, Any]:
    """Features of the chosen layers within ``radius_m`` metres (geodesic) of the point,
    with counts by layer; the area is the true circle's, πr²."""
    check_point(lon, lat)
    check_radius(radius_m)
    tables = check_layers(conn, layers)
    _check_limit(limit)
    match = near_point(lon, lat, radius_m)
    return _within_answer(conn, match, math.pi * radius_m**2, tables, limit)


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_WITHIN_FEATURES:
        raise InvalidInput(f"limit must be from 1 to {MAX_WITHIN_FEATURES}")


def _within_answer(
    conn: psycopg.Connection,
    match: sql.Composable,
    square_metres: float,
    tables: dict[str, registry.Layer],
    limit: int,
) -> dict[str, Any]:
    counts: dict[str, int] = {}
    found: dict[str, list[dict[str, Any]]] = {}
    for name, layer in tables.items():
        found[name], counts[name] = _intersecting(
            conn, layer, match, limit=limit, order=sql.SQL("1")
        )
    return {
        "area_m2": round(square_metres, 1),
        "counts": counts,
        "truncated": any(counts[layer] > len(found[layer]) for layer in tables),
        "features": found,
    }


def below(conn: psycopg.Connection, area: Any) -> dict[str, Any]:
    """Pipes and pipe nodes under an area (a footprint or planned excavation), shallowest first."""
    square_metres = check_area(conn, area)
    answer: dict[str, Any] = {"area_m2": round(square_metres, 1), "counts": {}}
    for layer in ("pipes", "pipe_nodes"):
        answer[layer], answer["counts"][layer] = _intersecting(
            conn,
            registry.BUILTIN[layer],
            _in_area(area),
            limit=MAX_WITHIN_FEATURES,
            order=sql.SQL("f.depth_m NULLS LAST, f.id"),
        )
    answer["truncated"] = any(answer["counts"][t] > len(answer[t]) for t in ("pipes", "pipe_nodes"))
    # Every network under the area, not only those of the listed pipes: an excavation
    # must know about the gas main even when the list was cut.
    networks = conn.execute(
        "SELECT DISTINCT network FROM pipes WHERE geom && ST_GeomFromText(%(a)s, 4326)"
        " AND ST_Intersects(geom, ST_GeomFromText(%(a)s, 4326)) ORDER BY 1",
        {"a": area.wkt},
    ).fetchall()
    answer["networks"] = [n[0] for n in networks]
    return answer


def building_footprint(conn: psycopg.Connection, building_id: int) -> Any:
    """A building's footprint as a shapely geometry; InvalidInput when there is none."""
    row = conn.execute(
        "SELECT ST_AsBinary(geom) FROM buildings WHERE id = %s", (building_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no building {building_id}")
    return shapely.from_wkb(row[0])
