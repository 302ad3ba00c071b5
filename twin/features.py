"""Features of every layer in the catalogue, as OGC API Features serves them.

A collection is a catalogue row (built-in kind or scene). Every name that reaches SQL is
checked against the collection's own columns (the queryables); every value is a parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from twin import cql, registry
from twin.crs import CRS84, SourceCRS, resolve_crs
from twin.errors import InvalidInput, NotFound
from twin.schema import SRID

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 10
HIDDEN_COLUMNS = {"geom"}
# The CRSs features are served in (and bbox-crs read in), as twin.crs resolves them: OGC
# URIs; axis order is each one's own (EPSG:4326, 4490 and Gauss-Krüger 4549 latitude or
# northing first, as OGC API Features Part 2 asks).
OUTPUT_CRS = ("CRS84", "EPSG:4326", "EPSG:4490", "EPSG:3857", "EPSG:4549")
SUPPORTED_CRS = tuple(str(resolve_crs(name).uri) for name in OUTPUT_CRS)
MAX_OFFSET = 2**63 - 1  # PostgreSQL's OFFSET is a bigint


@dataclass
class Collection:
    """One layer as a feature collection."""

    name: str
    title: str
    description: str
    kind: str
    table: str
    geometry_type: str
    id_column: str
    columns: dict[str, str]  # column -> JSON type, in table order
    time_column: str | None
    bbox: list[float] | None
    feature_count: int
    scene_properties: dict[str, Any] = field(default_factory=dict)

    @property
    def queryables(self) -> dict[str, str]:
        """Names a filter, sortby or properties selection may use, with their JSON types."""
        names = {c: t for c, t in self.columns.items() if c not in HIDDEN_COLUMNS}
        for prop, spec in self.scene_properties.items():
            names.setdefault(prop, spec.get("type", "string"))
        return names


def list_collections(catalogue: registry.Catalogue) -> list[Collection]:
    """Every feature layer of the catalogue (terrain is a raster, not features)."""
    return [collection(catalogue, layer.name) for layer in catalogue.feature_layers()]


def get_collection(catalogue: registry.Catalogue, name: str) -> Collection:
    """The collection called ``name``; NotFound otherwise."""
    if "\x00" in name:  # PostgreSQL text cannot hold it: no layer is called that
        raise NotFound(f"no collection {name.replace(chr(0), '')[:63]!r}")
    layer = catalogue.layer(name)
    if not layer.has_features:
        raise NotFound(
            f"{name!r} is a raster, not a feature collection: its tiles are at"
            f" /collections/{name}/map/tiles and /collections/{name}/coverage/tiles"
        )
    return collection(catalogue, name)


def collection(catalogue: registry.Catalogue, name: str) -> Collection:
    """The layer called ``name`` as a collection, with its catalogue entry's statistics."""
    layer = catalogue.layer(name)
    entry = catalogue.entries[name]
    return Collection(
        name=layer.name,
        title=entry["title"],
        description=entry["description"],
        kind=layer.kind,
        table=layer.table,
        geometry_type=layer.geometry_type,
        id_column=layer.id_column,
        columns=layer.public_columns,
        time_column=layer.time_column,
        bbox=entry["bbox"],
        feature_count=entry["feature_count"],
        scene_properties=layer.properties,
    )


@dataclass
class ItemsQuery:
    """What a client asked of /items, already parsed into plain values."""

    limit: int = DEFAULT_LIMIT
    offset: int = 0
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str = CRS84
    crs: str = CRS84
    properties: list[str] | None = None
    sortby: list[str] = field(default_factory=list)
    equals: dict[str, str] = field(default_factory=dict)
    datetime_range: tuple[datetime | None, datetime | None] | None = None
    filter: str | None = None
    filter_lang: str = "cql2-text"
    after: str | None = None  # keyset cursor: the last id of the page before


def served_crs(text: str, name: str = "crs") -> SourceCRS:
    """A CRS features are served in, given in any form twin.crs reads (URI, URN, short
    name: CRS84, EPSG:4490, 4549); InvalidInput naming ``name`` and the supported ones."""
    try:
        found = resolve_crs(text)
    except InvalidInput:
        found = None
    if found is None or found.uri not in SUPPORTED_CRS:  # unknown, offset, or not served
        raise InvalidInput(
            f"{name} {text[:80]!r} is not supported; use one of {', '.join(OUTPUT_CRS)}"
            f" (or their URIs, {CRS84} …)"
        )
    return found


def crs_uri(text: str, name: str = "crs") -> str:
    """The OGC URI of a CRS features are served in (see :func:`served_crs`)."""
    return str(served_crs(text, name).uri)


def check_crs(text: str) -> tuple[int, bool]:
    """SRID and axis order (latitude first?) of a CRS features are served in."""
    found = served_crs(text)
    return int(found.srid or SRID), found.lat_first


def items(conn: psycopg.Connection, coll: Collection, query: ItemsQuery) -> dict[str, Any]:
    """A page of features as a GeoJSON FeatureCollection, with numberMatched."""
    try:
        return _items(conn, coll, query)
    except RecursionError as exc:  # a filter of hundreds of chained terms
        raise InvalidInput("filter: too many terms nested; split it or use IN") from exc


def _items(conn: psycopg.Connection, coll: Collection, query: ItemsQuery) -> dict[str, Any]:
    if not 1 <= query.limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be from 1 to {MAX_LIMIT}")
    if not 0 <= query.offset <= MAX_OFFSET:
        raise InvalidInput(f"offset must be from 0 to {MAX_OFFSET}")
    where = _where(coll, query)
    order = _order(coll, query.sortby)
    srid, lat_first = check_crs(query.crs)
    select = _select(coll, query.properties, srid, lat_first)
    table = sql.Identifier(coll.table)
    page = where
    offset = query.offset
    if query.after is not None:
        # Keyset paging: the next page starts after the last id seen, through the primary
        # key's index, however deep; OFFSET would read and drop every row before it.
        if query.sortby:
            raise InvalidInput("after: a page cursor cannot be combined with sortby; use offset")
        page = sql.SQL("{} AND f.{} > {}").format(
            where, sql.Identifier(coll.id_column), sql.Literal(_key(coll, query.after, "after"))
        )
        offset = 0
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            # Values are literals composed by psycopg, so no placeholders: a '%' inside a
            # LIKE pattern must not be read as one.
            # The page's keys are found first and only its rows are built: an OFFSET
            # skips keys, not the JSON of every row before the page.
            sql.SQL(
                "SELECT {select} FROM {table} AS f WHERE f.{key} IN ("
                " SELECT f.{key} FROM {table} AS f WHERE {page} ORDER BY {order}"
                " LIMIT {limit} OFFSET {offset}) ORDER BY {order}"
            ).format(
                select=select,
                table=table,
                key=sql.Identifier(coll.id_column),
                page=page,
                order=order,
                limit=sql.Literal(query.limit),
                offset=sql.Literal(offset),
            )
        ).fetchall()
        matched = cur.execute(
            sql.SQL("SELECT count(*) AS n FROM {} AS f WHERE {}").format(table, where)
        ).fetchone()["n"]  # type: ignore[index]
    return {
        "type": "FeatureCollection",
        "features": [_feature(row) for row in rows],
        "numberMatched": matched,
        "numberReturned": len(rows),
    }


def item(
    conn: psycopg.Connection, coll: Collection, feature_id: str, crs: str = CRS84
) -> dict[str, Any]:
    """One feature by its id; NotFound when there is none."""
    srid, lat_first = check_crs(crs)
    try:
        key = _key(coll, feature_id, "id")
    except InvalidInput:
        raise NotFound(f"no feature {feature_id[:40]!r} in {coll.name}") from None
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            sql.SQL("SELECT {} FROM {} AS f WHERE {} = {}").format(
                _select(coll, None, srid, lat_first),
                sql.Identifier(coll.table),
                sql.Identifier(coll.id_column),
                sql.Literal(key),
            ),
        ).fetchone()
    if row is None:
        raise NotFound(f"no feature {feature_id!r} in {coll.name}")
    return _feature(row)


def _key(coll: Collection, text: str, name: str) -> Any:
    """A feature id as its column's type; InvalidInput when it cannot be one."""
    if coll.id_column != "id":
        return text
    if not text.isdigit() or len(text) > 18:
        raise InvalidInput(f"{name}: {text[:40]!r} is not a feature id of {coll.name}")
    return int(text)


def _select(
    coll: Collection, wanted: list[str] | None, srid: int, lat_first: bool
) -> sql.Composable:
    geometry = sql.SQL("ST_Transform(f.geom, {})").format(sql.Literal(srid))
    if lat_first:
        geometry = sql.SQL("ST_FlipCoordinates({})").format(geometry)
    names = [c for c in coll.columns if c not in HIDDEN_COLUMNS and c != "properties"]
    if wanted is not None:
        unknown = [w for w in wanted if w not in coll.queryables]
        if unknown:
            raise InvalidInput(
                f"properties: {', '.join(unknown)} not in {coll.name} (see queryables)"
            )
    pairs: list[sql.Composable] = []
    for name in names:
        if wanted is None or name in wanted:
            pairs += [sql.Literal(name), _json_value(name, coll.columns[name])]
    properties = sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(pairs))
    if "properties" in coll.columns:
        extra = sql.SQL("f.properties")
        if wanted is not None:
            keep = [w for w in wanted if w not in coll.columns]
            extra = sql.SQL(
                "(SELECT COALESCE(jsonb_object_agg(key, value), '{{}}') FROM jsonb_each(f.properties) WHERE key = ANY({}))"
            ).format(sql.Literal(keep))
        properties = sql.SQL("({} || {})").format(extra, properties)
    return sql.SQL(
        "f.{id}::text AS id, ST_AsGeoJSON({geom}, 9, 0)::jsonb AS geometry, {props} AS properties"
    ).format(id=sql.Identifier(coll.id_column), geom=geometry, props=properties)


def _json_value(name: str, json_type: str) -> sql.Composable:
    """A column as it goes into the JSON answer.

    A double that happens to be whole (150.0) would be written 150, and clients that guess
    a field's type from the first page (GDAL) would make it an integer and cut the rest;
    as numeric with one decimal it stays 150.0.
    """
    column = sql.SQL("f.{}").format(sql.Identifier(name))
    if json_type != "number":
        return column
    return sql.SQL(
        "(CASE WHEN {0} = trunc({0}) THEN round({0}::numeric, 1) ELSE {0}::numeric END)"
    ).format(column)


def _feature(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": row["id"],
        "geometry": row["geometry"],
        "properties": row["properties"],
    }


def _column(coll: Collection):  # noqa: ANN202
    """Property name -> SQL, for names in the queryables only."""

    def column(name: str) -> sql.Composable:
        if name == "geom" or name == "geometry":
            return sql.SQL("f.geom")
        if name in coll.columns and name not in HIDDEN_COLUMNS:
            return sql.SQL("f.{}").format(sql.Identifier(name))
        if name in coll.scene_properties:
            kind = coll.scene_properties[name].get("type", "string")
            text = sql.SQL("(f.properties->>{})").format(sql.Literal(name))
            if kind == "string":
                return text
            # A value kept as it came ("five" for a count) is not that type: it is NULL here.
            # numeric for integers: exact past 2^53, where a double is not.
            json_type, cast = {"integer": ("number", "numeric"),
                               "number": ("number", "double precision"),
                               "boolean": ("boolean", "boolean")}[kind]  # fmt: skip
            return sql.SQL(
                "(CASE WHEN jsonb_typeof(f.properties->{}) = {} THEN {}::{} END)"
            ).format(sql.Literal(name), sql.Literal(json_type), text, sql.SQL(cast))
        raise InvalidInput(f"{name!r} is not a queryable of {coll.name}")

    return column


def _where(coll: Collection, query: ItemsQuery) -> sql.Composable:
    column = _column(coll)
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    if query.bbox is not None:
        clauses.append(_bbox_clause(query.bbox, query.bbox_crs))
    for name, value in query.equals.items():
        clauses.append(
            sql.SQL("{} = {}").format(column(name), sql.Literal(_typed(name, value, coll)))
        )
    if query.datetime_range is not None:
        if coll.time_column is None:
            raise InvalidInput(f"{coll.name} has no time to filter on")
        start, end = query.datetime_range
        time = sql.SQL("f.{}").format(sql.Identifier(coll.time_column))
        if start is not None:
            clauses.append(sql.SQL("{} >= {}").format(time, sql.Literal(start)))
        if end is not None:
            clauses.append(sql.SQL("{} <= {}").format(time, sql.Literal(end)))
    if query.filter:
        tree = cql.parse(query.filter, query.filter_lang)
        clauses.append(cql.compile_filter(tree, column, sql.SQL("f.geom"), SRID, coll.queryables))
    return sql.SQL(" AND ").join(clauses)


def _typed(name: str, value: str, coll: Collection) -> Any:
    """A ?property=value text as the property's type; InvalidInput when it cannot be."""
    kind = coll.queryables.get(name)
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(value)
            return number
    except ValueError:
        raise InvalidInput(
            f"{name} is {'an' if kind == 'integer' else 'a'} {kind}: {value[:40]!r} is not"
        ) from None
    if kind == "boolean":
        if value.lower() not in ("true", "false"):
            raise InvalidInput(f"{name} is true or false, not {value[:40]!r}")
        return value.lower() == "true"
    if kind == "string" and name in ("updated_at", "latest_at"):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"{name} is a date-time (RFC 3339), not {value[:40]!r}") from None
    if kind == "object":
        raise InvalidInput(f"{name} holds several values; filter on one of them with filter=")
    return value


def _bbox_clause(bbox: tuple[float, float, float, float], bbox_crs: str) -> sql.Composable:
    """Features whose geometry intersects the box (OGC API Features), not merely its
    bounding box: the index finds candidates (&&), ST_Intersects decides."""
    srid, lat_first = check_crs(bbox_crs)
    x1, y1, x2, y2 = bbox
    if lat_first:
        x1, y1, x2, y2 = y1, x1, y2, x2
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise InvalidInput("bbox: every number must be finite")
    if srid in (4326, 4490):
        if not (-180 <= x1 <= 180 and -180 <= x2 <= 180 and -90 <= y1 <= 90 and -90 <= y2 <= 90):
            raise InvalidInput("bbox: longitudes must be within ±180 and latitudes within ±90")
        if y1 > y2:
            raise InvalidInput("bbox: the southern edge is north of the northern edge")
        if x1 > x2:  # crosses the antimeridian: two boxes
            return sql.SQL("({} OR {})").format(
                _intersects_box(x1, y1, 180, y2, srid), _intersects_box(-180, y1, x2, y2, srid)
            )
        return _intersects_box(x1, y1, x2, y2, srid)
    if x1 > x2 or y1 > y2:
        raise InvalidInput("bbox: minimum above maximum")
    if max(abs(x1), abs(y1), abs(x2), abs(y2)) > 1e8:
        raise InvalidInput("bbox: coordinates beyond the CRS's range")
    # A projected box's edges are curves in lon/lat: segmentize before transforming.
    box = sql.SQL("ST_Transform(ST_Segmentize({}, {}), {})").format(
        _envelope(x1, y1, x2, y2, srid),
        sql.Literal(max(x2 - x1, y2 - y1, 1e-9) / 32),
        sql.Literal(SRID),
    )
    return sql.SQL("(f.geom && {0} AND ST_Intersects(f.geom, {0}))").format(box)


def _envelope(x1: float, y1: float, x2: float, y2: float, srid: int) -> sql.Composable:
    """The box from its corners; a box of no width or height is the line or point it is
    (ST_MakeEnvelope would make an empty polygon that intersects nothing)."""
    corner = "ST_SetSRID(ST_MakePoint({}, {}), {})"
    return sql.SQL(f"ST_Envelope(ST_MakeLine({corner}, {corner}))").format(
        sql.Literal(x1), sql.Literal(y1), sql.Literal(srid),
        sql.Literal(x2), sql.Literal(y2), sql.Literal(srid),
    )  # fmt: skip


def _intersects_box(x1: float, y1: float, x2: float, y2: float, srid: int) -> sql.Composable:
    box = sql.SQL("ST_Transform({}, {})").format(_envelope(x1, y1, x2, y2, srid), sql.Literal(SRID))
    return sql.SQL("(f.geom && {0} AND ST_Intersects(f.geom, {0}))").format(box)


def _order(coll: Collection, sortby: list[str]) -> sql.Composable:
    column = _column(coll)
    parts = []
    for item_ in sortby:
        descending = item_.startswith("-")
        name = item_.lstrip("+-")
        if name in ("geometry", "geom") or coll.queryables.get(name) == "object":
            raise InvalidInput(
                f"sortby: {name} cannot be sorted on; sort on a property that holds one value"
            )
        parts.append(
            # Features with no value last either way: "the tallest" are not the unmeasured.
            sql.SQL("{} {} NULLS LAST").format(
                column(name), sql.SQL("DESC" if descending else "ASC")
            )
        )
    parts.append(sql.SQL("f.{}").format(sql.Identifier(coll.id_column)))  # stable paging
    return sql.SQL(", ").join(parts)


def queryables_schema(coll: Collection, base_url: str) -> dict[str, Any]:
    """The queryables as JSON Schema (OGC API Features Part 3)."""
    properties: dict[str, Any] = {
        "geometry": {"$ref": f"https://geojson.org/schema/{coll.geometry_type}.json"}
    }
    for name, kind in coll.queryables.items():
        properties[name] = {"type": kind, "title": name}
        if kind == "string" and name in ("updated_at", "latest_at"):
            properties[name]["format"] = "date-time"
    return {
        "$schema": "https://json-schema.org/draft/2019-09/schema",
        "$id": f"{base_url}/collections/{coll.name}/queryables",
        "type": "object",
        "title": coll.title,
        "properties": properties,
        "additionalProperties": False,
    }
