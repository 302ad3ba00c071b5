"""Vector tiles (Mapbox Vector Tile 2.1) of the registry's layers, made in PostGIS.

One statement a tile. For each layer asked: its features under the tile, found with an
index-friendly ``geom && box`` on the stored column (WGS 84, the storage CRS; the box is
the tile's envelope grown by the buffer), drawn by ``ST_AsMVTGeom`` into the tile's
4096-unit grid with a 64-unit buffer, ranked, capped, and encoded by ``ST_AsMVT`` as a layer
named after the collection. A tile is its layers one after another, so the layers' bytes
are joined in the data base and come back as one value.

What a layer shows at a zoom is its registry's ``Tiling``: every feature as stored from
``full_zoom`` up; simplified to the pixel grid and without features smaller than a pixel
below it; merged by cells of the pixel grid (blocks or clusters, with a ``count``) below
``merge_below``; nothing below ``min_zoom``. A tile's properties are the layer's ``tile``
names, never a hidden (personal) column.

An incident's ``overdue`` is worked out at render time against the clock, as the incident
lists and the SLA sweep do (``intake.OVERDUE_WHERE``). It changes with the clock, not only
with writes, so a stored tile would go stale: the tile cache keeps a tile holding
incidents only until the next due time among them (``intake.next_overdue_at``), and tiles
holding incidents are answered ``Cache-Control: no-cache`` so that no client keeps one
without asking.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import DateTime

from tiles import matrix
from twin import features, registry
from twin.errors import NotFound, TwinError
from twin.incidents import intake
from twin.settings import TileSettings

EXTENT = 4096  # tile units a side: MVT's usual grid
BUFFER = 64  # tile units drawn past each edge, so lines and outlines meet across tiles
PIXEL = EXTENT // 256  # tile units in a screen pixel of a 256-pixel tile
# The cells features are merged by, in screen pixels: small blocks, wider clusters.
CELL_PIXELS = {"point": 32, "line": 8, "polygon": 8}
MAX_TRIES = 4  # renders of a tile over its byte cap, each with fewer features
EARTH = 20037508.342789244  # half the width of the WebMercatorQuad world, metres
MERCATOR_LAT = 85.05112878  # WebMercatorQuad's edge
MVT_TYPE = "application/vnd.mapbox-vector-tile"
# From this zoom up a tile's features are drawn by the tangent of Web Mercator at the
# tile's centre (an affine map, ST_Affine) instead of ST_Transform, which costs some 10 µs a
# feature in PROJ: over a tile of zoom 14 and its buffer the tangent stays within 0.2 tile
# units of the projection at any latitude (and a quarter of that per zoom deeper), below
# the rounding to the tile's integer grid.
TANGENT_FROM = 14

# Which features a tile keeps first when the cap bites (the first in this order).
RANKS: dict[str, str] = {
    "id": "f.{id}",
    "area": "-ST_Area(f.geom), f.{id}",
    "length": "-ST_Length(f.geom), f.{id}",
    "diameter": "-coalesce(f.diameter_mm, 0), -ST_Length(f.geom), f.{id}",
    "incident": "{overdue} DESC, {priority}, f.reported_at DESC, f.{id}",
}
# Tile properties that are worked out, not read: the layer kind's, as SQL over ``f``.
_OVERDUE = sql.SQL(
    "(SELECT {} FROM (SELECT f.status, f.due_response_at, f.due_resolve_at) AS i)"
).format(intake.OVERDUE_WHERE)
_PRIORITY = sql.SQL("(SELECT c.priority FROM incident_categories c WHERE c.code = f.category_code)")
COMPUTED: dict[str, dict[str, sql.Composable]] = {
    "incident": {"overdue": _OVERDUE, "priority": _PRIORITY},
}
_TYPES = {"overdue": "boolean", "priority": "integer"}


class TileTooHeavy(TwinError):
    """A tile that cannot be made within its time or byte limits (over HTTP 503 with
    Retry-After: the data base is busy, or the tile is denser than its caps allow)."""


@dataclass(frozen=True)
class Limits:
    """How much a tile may hold and how long it may take."""

    max_features: int = 20_000  # per layer of a tile
    max_bytes: int = 2_000_000
    timeout_ms: int = 3000

    @classmethod
    def of(cls, settings: TileSettings) -> Limits:
        """The limits the settings give."""
        return cls(settings.tile_max_features, settings.tile_max_bytes, settings.tile_timeout_ms)


@dataclass(frozen=True)
class Rendered:
    """A tile's MVT bytes (b"" when it holds nothing), the layers asked for it (in the
    catalogue's order) and those whose features the caps cut (the most important kept)."""

    data: bytes
    layers: tuple[str, ...] = ()
    truncated: tuple[str, ...] = ()


def render(
    conn: psycopg.Connection,
    catalogue: registry.Catalogue,
    layers: Sequence[str],
    tile: matrix.Tile,
    *,
    limits: Limits = Limits(),
) -> bytes:
    """The MVT bytes of ``tile`` (WebMercatorQuad) holding the named layers, b"" when it
    holds nothing. NotFound for a name that is no feature layer of the catalogue."""
    return render_tile(conn, catalogue, layers, tile, limits=limits).data


def render_tile(
    conn: psycopg.Connection,
    catalogue: registry.Catalogue,
    layers: Sequence[str],
    tile: matrix.Tile,
    *,
    limits: Limits = Limits(),
) -> Rendered:
    """``render``, saying which layers the caps cut. TileTooHeavy when the tile takes
    longer than ``limits.timeout_ms`` or stays over ``limits.max_bytes``."""
    first = first_try(conn, catalogue, layers, tile, limits=limits)
    row = run(conn, first.text, first.params, limits, tile, first.prepare)
    data, counts = bytes(row[0] or b""), list(row[1])
    return first.outcome(data, counts) or finish(conn, catalogue, first, data, counts, tile)


@dataclass(frozen=True)
class FirstTry:
    """A tile's first render as one statement (its row: the tile's bytes, its layers'
    counts), for a caller that may run it inside a statement of its own: the tile cache
    looks up, renders and stores a tile in one (tiles/cache.py)."""

    text: str
    params: dict[str, Any]
    prepare: bool | None  # as ``run`` takes it
    names: tuple[str, ...]  # the layers asked, in the catalogue's order
    shown: tuple[str, ...]  # those drawn at the tile's zoom
    limits: Limits

    def cut(self, data: bytes, counts: Sequence[int]) -> bool:
        """Whether the caps cut this first render (``finish`` makes the tile then)."""
        cap = self.limits.max_features
        return any(n > cap for n in counts) or len(data) > self.limits.max_bytes

    def outcome(self, data: bytes, counts: Sequence[int]) -> Rendered | None:
        """The tile, if the first render is it; None when the caps cut it."""
        return None if self.cut(data, counts) else Rendered(data, self.names)


# A tile no layer is drawn in at its zoom: empty, in the shape of a render's row.
_NOTHING = "SELECT ''::bytea, ARRAY[]::bigint[]"


def first_try(
    conn: psycopg.Connection,
    catalogue: registry.Catalogue,
    layers: Sequence[str],
    tile: matrix.Tile,
    *,
    limits: Limits = Limits(),
    now: datetime | None = None,
) -> FirstTry:
    """The statement of the tile's first render: every feature there (unranked), under
    the feature cap; NotFound for a name that is no feature layer. ``now``: the clock an
    incident's overdue is read against (the caller's, when it reads the same)."""
    chosen = tile_layers(catalogue, layers)
    names = tuple(layer.name for layer in chosen)
    shown = [layer for layer in chosen if tile.z >= layer.tiling.min_zoom]
    params = _params(tile, limits.max_features, now or datetime.now(UTC))
    if not shown:
        return FirstTry(_NOTHING, params, None, names, (), limits)
    # Prepared where the plan does not hang on the tile's numbers: no merged layer.
    prepare = None if all(tile.z >= layer.tiling.merge_below for layer in shown) else False
    text = _statement_text(conn, catalogue, shown, tile.z, frozenset())
    return FirstTry(text, params, prepare, names, tuple(x.name for x in shown), limits)


def finish(
    conn: psycopg.Connection,
    catalogue: registry.Catalogue,
    first: FirstTry,
    data: bytes,
    counts: list[int],
    tile: matrix.Tile,
    *,
    timed: bool = False,
) -> Rendered:
    """The tile whose first render (``data``, ``counts``) the caps cut: rendered again,
    the layers over the feature cap ranked so the most important are kept, and with
    fewer features while it is over the byte cap; TileTooHeavy past ``MAX_TRIES``."""
    limits = first.limits
    shown = [catalogue.layer(name) for name in first.shown]
    cap, ranked, tries = limits.max_features, frozenset[str](), 1
    while True:
        over = frozenset(layer.name for layer, n in zip(shown, counts, strict=True) if n > cap)
        if over <= ranked:
            if len(data) <= limits.max_bytes:
                truncated = tuple(layer.name for layer in shown if layer.name in over)
                return Rendered(data, first.names, truncated)
            # Over the byte cap: as many fewer features as the bytes are over, and a margin.
            most = min(cap, max(counts))
            cap = max(1, int(most * limits.max_bytes / len(data) * 0.8))
            ranked |= {layer.name for layer, n in zip(shown, counts, strict=True) if n > cap}
        else:  # cut: render again, keeping the most important first
            ranked |= over
        if tries > MAX_TRIES:
            raise TileTooHeavy(
                f"tile {tile.z}/{tile.y}/{tile.x} stays over {limits.max_bytes:,} bytes with "
                f"{cap} features a layer; ask for fewer layers or a deeper zoom"
            )
        statement = _statement_text(conn, catalogue, shown, tile.z, ranked)
        params = {**first.params, "cap": cap, "over": cap + 1}
        row = run(conn, statement, params, limits, tile, first.prepare, timed=timed)
        data, counts, tries = bytes(row[0] or b""), list(row[1]), tries + 1


def tile_layers(catalogue: registry.Catalogue, names: Sequence[str]) -> list[registry.Layer]:
    """The feature layers named, in the catalogue's order (so a tile's bytes do not depend
    on the order they were asked in); NotFound for a name that is no feature layer."""
    wanted = set(names)
    for name in names:
        if not catalogue.layer(name).has_features:
            raise NotFound(f"{name!r} is a raster: its tiles are its coverage's")
    return [layer for layer in catalogue.feature_layers() if layer.name in wanted]


def fields(layer: registry.Layer) -> dict[str, str]:
    """The properties of the layer's tiles with their JSON types (TileJSON's fields)."""
    kinds = {**layer.public_columns, **_TYPES}
    types = {name: spec.get("type", "string") for name, spec in layer.properties.items()}
    out = {"id": "integer"} if _integer_id(layer) else {}
    for name in layer.tile:
        out[name] = types.get(name) or kinds.get(name, "string")
    return out


def merged_fields(layer: registry.Layer) -> dict[str, str]:
    """The properties of the layer's merged features (below ``merge_below``)."""
    out = {"count": "integer"}
    for name, kind in fields(layer).items():
        if name in ("id", "count"):
            continue
        if kind in ("number", "integer"):
            out[name] = "number"
        elif kind == "boolean":
            out[f"{name}_count"] = "integer"
        elif name in layer.tiling.merge_keep:
            out[name] = kind
    return out


def _integer_id(layer: registry.Layer) -> bool:
    return layer.columns.get(layer.id_column) == "integer"


def _statement_text(
    conn: psycopg.Connection,
    catalogue: registry.Catalogue,
    shown: list[registry.Layer],
    z: int,
    ranked: frozenset[str],
) -> str:
    """``_statement`` as text, made once for each catalogue, layers, zoom and ranking:
    composing it took longer than a street tile's query. An entry holds its catalogue, so
    the catalogue's id in the key is not reused while the entry lives."""
    key = (id(catalogue), tuple(layer.name for layer in shown), z, ranked)
    found = _STATEMENTS.get(key)
    if found is not None and found[0] is catalogue:
        _STATEMENTS.move_to_end(key)
        return found[1]
    text = _statement(shown, z, ranked).as_string(conn)
    _STATEMENTS[key] = (catalogue, text)
    while len(_STATEMENTS) > 512:
        _STATEMENTS.popitem(last=False)
    return text


_STATEMENTS: OrderedDict[tuple[Any, ...], tuple[registry.Catalogue, str]] = OrderedDict()


def run(
    conn: psycopg.Connection,
    statement: str,
    params: dict[str, Any],
    limits: Limits,
    tile: matrix.Tile,
    prepare: bool | None,
    *,
    timed: bool = False,
) -> tuple[Any, ...]:
    """The statement's one row, under the tile's own time limit (``prepare``: False to
    have it planned with this tile's numbers, None to let psycopg prepare it once it has
    run a few times; ``timed``: the connection's ``statement_timeout`` is that limit)."""
    # Inside a transaction block its caller opened on an autocommit connection (the tile
    # cache's snapshot), which a failure here ends, the time limit is set for the rest of
    # it: a savepoint of our own cost a tenth of a street tile's time. Anywhere else (an
    # implicit transaction a caller goes on with) a failure stays in a savepoint. No
    # pipeline: for two statements psycopg's took longer than two round trips.
    inside = timed or (
        conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    )
    try:
        with contextlib.nullcontext() if inside else conn.transaction():
            if not timed:
                conn.execute(f"SET LOCAL statement_timeout = {int(limits.timeout_ms)}")
            row = conn.execute(statement, params, prepare=prepare).fetchone()
    except psycopg.errors.QueryCanceled as exc:
        raise TileTooHeavy(
            f"tile {tile.z}/{tile.y}/{tile.x} took longer than {limits.timeout_ms} ms "
            "(TWIN_TILE_TIMEOUT_MS); retry later, or ask for a deeper zoom"
        ) from exc
    assert row is not None
    return tuple(row)


def _params(tile: matrix.Tile, cap: int, now: datetime) -> dict[str, Any]:
    west, south, east, north = matrix.lonlat_bounds("WebMercatorQuad", tile)
    box = matrix.lonlat_bounds("WebMercatorQuad", tile, BUFFER / EXTENT)
    size = 2 * EARTH / 2**tile.z  # the tile's width in metres (WebMercatorQuad)
    pixel_lon = (east - west) / 256
    middle = math.radians((north + south) / 2)
    return {
        "z": tile.z, "x": tile.x, "y": tile.y,
        "box_w": box[0], "box_s": box[1], "box_e": box[2], "box_n": box[3],
        "cap": cap, "over": cap + 1,
        # a screen pixel in degrees, for features smaller than one
        "pixel_lon": pixel_lon, "pixel_lat": pixel_lon * math.cos(middle),
        "tolerance": size / 256 / 4,  # a quarter pixel, in metres: what simplify removes
        "west": west, "north": north, "lon_span": east - west,
        "north_y": _mercator_y(north), "y_span": _mercator_y(north) - _mercator_y(south),
        **_tangent(north, south),
        **intake.overdue_params(now),
    }  # fmt: skip


def _tangent(north: float, south: float) -> dict[str, float]:
    """The affine map from lon/lat to Web Mercator metres that touches the projection at
    the middle of the tile (north to south, degrees): x is exact (linear in longitude), y
    follows the projection's slope there."""
    radius = EARTH / math.pi
    middle_y = (_mercator_y(north) + _mercator_y(south)) / 2
    middle = math.degrees(math.atan(math.sinh(middle_y)))
    slope = radius * math.radians(1) / math.cos(math.radians(middle))  # metres a degree
    return {"to_x": EARTH / 180, "to_y": slope, "y_off": radius * middle_y - slope * middle}


def _mercator_y(lat: float) -> float:
    lat = max(-MERCATOR_LAT, min(MERCATOR_LAT, lat))
    return math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


# The tile's envelope with the buffer's margin, in the storage CRS: numbers of this tile,
# so the planner sees how much of the layer it holds (a box read from a CTE, it guessed one
# row, and sorted a million on disk to merge them).
_BOX = sql.SQL("ST_MakeEnvelope(%(box_w)s, %(box_s)s, %(box_e)s, %(box_n)s, 4326)")
_ENVELOPE = sql.SQL("ST_TileEnvelope(%(z)s, %(x)s, %(y)s)")  # WebMercatorQuad's, in 3857


def _statement(
    shown: list[registry.Layer], z: int, ranked: frozenset[str] = frozenset()
) -> sql.Composable:
    """One statement for the whole tile: a selection per layer, their MVT layers joined,
    and how many features each had (up to the cap and one: more than the cap means it was
    cut). A layer not in ``ranked`` is encoded and counted in one pass over its features
    (``r0``, ``r1`` … in FROM), all there and unsorted by rank: when its count passes the
    cap the tile is made again with it ranked. A layer in ``ranked`` is kept (a CTE),
    sorted by its rank, and its first ``cap`` encoded (the cap keeps the most important)."""
    ctes: list[sql.Composable] = []
    sources: list[sql.Composable] = []
    tiles: list[sql.Composable] = []
    counts: list[sql.Composable] = []
    for i, layer in enumerate(shown):
        name = sql.Identifier(f"r{i}")
        merged = z < layer.tiling.merge_below
        cut = layer.name in ranked
        select = _merged(layer) if merged else _detailed(layer, z, cut)
        feature_id = sql.SQL(", '__id'") if _integer_id(layer) and not merged else sql.SQL("")
        encode = sql.SQL("ST_AsMVT(m, {}, {}, '__geom'{})").format(
            sql.Literal(layer.name), sql.Literal(EXTENT), feature_id
        )
        if not cut:
            sources.append(
                sql.SQL("(SELECT {} AS tile, count(*) AS n FROM ({}) AS m) AS {}").format(
                    encode, select, name
                )
            )
            tiles.append(sql.SQL("coalesce({}.tile, '')").format(name))
            counts.append(sql.SQL("{}.n").format(name))
            continue
        ctes.append(sql.SQL("{} AS MATERIALIZED ({})").format(name, select))
        tiles.append(
            sql.SQL("coalesce((SELECT {} FROM (SELECT * FROM {} LIMIT %(cap)s) AS m), '')").format(
                encode, name
            )
        )
        counts.append(sql.SQL("(SELECT count(*) FROM {})").format(name))
    return sql.SQL("{}SELECT {}, ARRAY[{}]::bigint[]{}").format(
        sql.SQL("WITH {} ").format(sql.SQL(", ").join(ctes)) if ctes else sql.SQL(""),
        sql.SQL(" || ").join(tiles),
        sql.SQL(", ").join(counts),
        sql.SQL(" FROM {}").format(sql.SQL(", ").join(sources)) if sources else sql.SQL(""),
    )


def _properties(layer: registry.Layer) -> list[sql.Composable]:
    """The layer's tile properties as SQL over ``f``, each named as the property."""
    check_tile_names(layer)
    computed = COMPUTED.get(layer.kind, {})
    scene_column = features._column(features.Collection(  # the features API's reading
        name=layer.name, title="", description="", kind=layer.kind, table=layer.table,
        geometry_type=layer.geometry_type, id_column=layer.id_column, columns={},
        time_column=None, bbox=None, feature_count=0, scene_properties=layer.properties,
    ))  # fmt: skip
    out = []
    for name in layer.tile:
        if name in computed:
            value: sql.Composable = computed[name]
        elif name in layer.properties:
            value = scene_column(name)
            if layer.properties[name].get("type") == "integer":  # numeric: MVT has no such
                value = sql.SQL("(CASE WHEN abs({0}) < 9.2e18 THEN {0}::bigint END)").format(value)
        elif _is_time(layer, name):  # RFC 3339, not the session's own format
            value = sql.SQL(
                """to_char(f.{} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""
            ).format(sql.Identifier(name))
        else:
            value = sql.SQL("f.{}").format(sql.Identifier(name))
        out.append(sql.SQL("{} AS {}").format(value, sql.Identifier(name)))
    return out


def check_tile_names(layer: registry.Layer) -> None:
    """Refuses a layer whose tile names a hidden column or a name it has not."""
    computed = COMPUTED.get(layer.kind, {})
    for name in layer.tile:
        if name in layer.hidden:
            raise ValueError(f"{layer.name}: {name} is hidden; it may not be in a tile")
        if name not in layer.columns and name not in computed and name not in layer.properties:
            raise ValueError(f"{layer.name}: tile property {name} is no column of it")


def _is_time(layer: registry.Layer, name: str) -> bool:
    if layer.model is None:
        return False
    return isinstance(layer.model.__table__.c[name].type, DateTime)


def _rank(layer: registry.Layer) -> sql.Composable:
    computed = COMPUTED.get(layer.kind, {})
    return sql.SQL(RANKS[layer.tiling.rank]).format(id=sql.Identifier(layer.id_column), **computed)


def _detailed(layer: registry.Layer, z: int, ranked: bool) -> sql.Composable:
    """Each feature under the tile: as stored from the layer's full zoom, simplified to
    the pixel grid and without those smaller than a pixel below it. The ranked rows are
    fenced (OFFSET 0) so that the drawing is done once a feature: without it the planner
    pushed ``__geom IS NOT NULL`` into the scan and drew every feature twice."""
    if z >= TANGENT_FROM:
        shape = sql.SQL("ST_Affine(f.geom, %(to_x)s, 0, 0, %(to_y)s, 0, %(y_off)s)")
    else:
        shape = sql.SQL("ST_Transform(f.geom, 3857)")
    where = [sql.SQL("f.geom && {}").format(_BOX)]
    if z < layer.tiling.full_zoom and layer.family != "point":
        # Douglas-Peucker, keeping what it would collapse: the tile's clip repairs what a
        # topology-preserving pass would guard against, at half its cost.
        shape = sql.SQL("ST_Simplify({}, %(tolerance)s, true)").format(shape)
    least = layer.tiling.least(z)
    if least is not None:
        column = sql.Identifier(layer.tiling.thin_column or "")
        where.append(sql.SQL("(f.{0} IS NULL OR f.{0} >= {1})").format(column, sql.Literal(least)))
        where.append(
            sql.SQL(
                "(ST_XMax(f.geom) - ST_XMin(f.geom) >= %(pixel_lon)s"
                " OR ST_YMax(f.geom) - ST_YMin(f.geom) >= %(pixel_lat)s)"
            )
        )
    columns = _properties(layer)
    if _integer_id(layer):
        ident = sql.Identifier(layer.id_column)
        columns = [sql.SQL("f.{} AS __id, f.{} AS id").format(ident, ident), *columns]
    return sql.SQL(
        "SELECT * FROM (SELECT {columns}, ST_AsMVTGeom({shape}, {envelope}, {extent},"
        " {buffer}, true) AS __geom FROM {table} AS f WHERE {where} {order} OFFSET 0)"
        " AS q WHERE __geom IS NOT NULL LIMIT %(over)s"
    ).format(
        columns=sql.SQL(", ").join(columns),
        shape=shape,
        envelope=_ENVELOPE,
        extent=sql.Literal(EXTENT),
        buffer=sql.Literal(BUFFER),
        table=sql.Identifier(layer.table),
        where=sql.SQL(" AND ").join(where),
        # Unranked, by id: the same bytes whatever plan the data base takes (an ETag
        # holds across renders), for the cost of sorting integers.
        order=sql.SQL("ORDER BY {}").format(
            _rank(layer) if ranked else sql.SQL("f.{}").format(sql.Identifier(layer.id_column))
        ),
    )


def _merged(layer: registry.Layer) -> sql.Composable:
    """The layer's features merged by cells of the pixel grid: one feature a cell, with
    their count; points at their mean, lines and polygons as the block they cover. A
    feature belongs to the cell of its box's centre, and a tile keeps its own cells only,
    so a cell is the same in every tile that draws it."""
    cells = EXTENT // PIXEL // CELL_PIXELS[layer.family]
    kinds = fields(layer)
    values = dict(zip(layer.tile, _properties(layer), strict=True))
    # Only what the cells and their values are made of: no geometry is carried.
    inner: list[sql.Composable] = [sql.SQL("c.cx, c.cy")]
    aggregates = [sql.SQL("count(*) AS count")]
    names = [sql.Identifier("count")]
    for name in layer.tile:
        column = sql.Identifier(name)
        if name == "count":
            continue
        if kinds[name] in ("number", "integer"):
            aggregate = sql.SQL("round(avg(g.{0})::numeric, 1)::float8 AS {0}").format(column)
        elif kinds[name] == "boolean":
            aggregate = sql.SQL("count(*) FILTER (WHERE g.{}) AS {}").format(
                column, sql.Identifier(f"{name}_count")
            )
        elif name in layer.tiling.merge_keep:
            aggregate = sql.SQL("mode() WITHIN GROUP (ORDER BY g.{0}) AS {0}").format(column)
        else:
            continue
        inner.append(values[name])
        aggregates.append(aggregate)
        names.append(sql.Identifier(f"{name}_count" if kinds[name] == "boolean" else name))
    if layer.family == "point":
        shape = sql.SQL("ST_SetSRID(ST_MakePoint(avg(g.cx), avg(g.cy)), 4326)")
    else:  # the box of the cell's features, from their boxes
        inner += [sql.SQL("ST_XMin(f.geom) AS x0, ST_YMin(f.geom) AS y0, ST_XMax(f.geom) AS x1,"
                          " ST_YMax(f.geom) AS y1")]  # fmt: skip
        shape = sql.SQL("ST_MakeEnvelope(min(g.x0), min(g.y0), max(g.x1), max(g.y1), 4326)")
    # The cells outside the tile go after grouping, fenced (OFFSET 0) so the planner does
    # not filter rows by them first: it then guessed a row or two and merged by sorting.
    return sql.SQL(
        "SELECT {names}, __geom FROM (SELECT {aggregates}, ST_AsMVTGeom(ST_Transform({shape}, 3857),"
        " {envelope}, {extent}, {buffer}, true) AS __geom, g.col AS __col, g.row AS __row"
        " FROM (SELECT {inner},"
        "  floor((c.cx - %(west)s) / %(lon_span)s * {cells}) AS col,"
        "  floor((%(north_y)s - ln(tan(pi() / 4 + radians(least(greatest(c.cy, -{lat}), {lat}))"
        "   / 2))) / %(y_span)s * {cells}) AS row"
        "  FROM {table} AS f"
        "  CROSS JOIN LATERAL (SELECT (ST_XMin(f.geom) + ST_XMax(f.geom)) / 2 AS cx,"
        "   (ST_YMin(f.geom) + ST_YMax(f.geom)) / 2 AS cy) AS c"
        "  WHERE f.geom && {box}) AS g"
        " GROUP BY g.col, g.row OFFSET 0) AS cell"
        " WHERE __col BETWEEN 0 AND {last} AND __row BETWEEN 0 AND {last}"
        " ORDER BY count DESC, __col, __row LIMIT %(over)s"
    ).format(
        names=sql.SQL(", ").join(names),
        aggregates=sql.SQL(", ").join(aggregates),
        shape=shape,
        envelope=_ENVELOPE,
        box=_BOX,
        extent=sql.Literal(EXTENT),
        buffer=sql.Literal(BUFFER),
        inner=sql.SQL(", ").join(inner),
        cells=sql.Literal(cells),
        last=sql.Literal(cells - 1),
        lat=sql.Literal(MERCATOR_LAT),
        table=sql.Identifier(layer.table),
    )
