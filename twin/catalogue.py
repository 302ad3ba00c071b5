"""The layer catalogue: the data inventory (数据清单) every API answer and tile is made from.

Each layer is one row: what it is, where its features live, who provides and owns it, its
licence, cadence, source CRS, extent and count. The built-in kinds are registered on every
start; their property schema is derived from the table itself, so it cannot drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from sqlalchemy import Boolean, DateTime, Double, Integer, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import BigInteger

from twin import schema
from twin.errors import NotFound


@dataclass(frozen=True)
class BuiltinLayer:
    """A layer kind the one map has from the start."""

    name: str
    title: str
    kind: str
    model: type[schema.Base]
    description: str

    @property
    def table_name(self) -> str:
        """The table that holds the layer's features."""
        return str(self.model.__tablename__)

    @property
    def geometry_type(self) -> str:
        """Geometry type of the layer's ``geom`` column (e.g. MultiPolygon)."""
        geometry_type = self.model.__table__.c.geom.type.geometry_type  # type: ignore[attr-defined]
        return _GEOMETRY_NAMES[str(geometry_type).upper()]


_GEOMETRY_NAMES = {
    "POINT": "Point",
    "LINESTRING": "LineString",
    "POLYGON": "Polygon",
    "MULTIPOINT": "MultiPoint",
    "MULTILINESTRING": "MultiLineString",
    "MULTIPOLYGON": "MultiPolygon",
}

BUILTIN_LAYERS: tuple[BuiltinLayer, ...] = (
    BuiltinLayer(
        "buildings", "Buildings 城市楼宇", "building", schema.Building,
        "Building footprints with height, floors, use and address.",
    ),
    BuiltinLayer(
        "public_spaces", "Public space 公共空间", "public_space", schema.PublicSpace,
        "Parks, squares, roads, water, green and plazas.",
    ),
    BuiltinLayer(
        "pipes", "Pipes 地下管网", "pipe", schema.Pipe,
        "Underground pipes of every network, with diameter, material and depth.",
    ),
    BuiltinLayer(
        "pipe_nodes", "Pipe nodes 管网节点", "pipe_node", schema.PipeNode,
        "Valves, hydrants, manholes, junctions, sources and service connections.",
    ),
    BuiltinLayer(
        "sensors", "Sensors 物联感知设备", "sensor", schema.Sensor,
        "IoT sensing devices with thresholds and their latest reading.",
    ),
    BuiltinLayer(
        "jurisdictions", "Jurisdictions 管辖区域", "jurisdiction", schema.Jurisdiction,
        "City, district, street, grid and community boundaries.",
    ),
    BuiltinLayer(
        "units", "Units 责任单位", "unit", schema.Unit,
        "Departments, teams and centres that handle incidents.",
    ),
)  # fmt: skip

BUILTIN_BY_NAME = {layer.name: layer for layer in BUILTIN_LAYERS}
# Scene tables are made by layers.scenes from a checked name; nothing else matches this.
SCENE_TABLE = re.compile(r"^scene_[a-z][a-z0-9_]{1,39}$")


def property_schema(model: type[schema.Base]) -> dict[str, Any]:
    """A JSON Schema of the layer's properties, read off the table's columns."""
    properties: dict[str, Any] = {}
    for column in model.__table__.columns:
        if column.name == "geom":
            continue
        properties[column.name] = {"type": _json_type(column.type)}
        if column.comment:
            properties[column.name]["description"] = column.comment
    return {"type": "object", "properties": properties}


def _json_type(column_type: object) -> str:
    if isinstance(column_type, Boolean):
        return "boolean"
    if isinstance(column_type, Integer | BigInteger):
        return "integer"
    if isinstance(column_type, Double):
        return "number"
    if isinstance(column_type, JSONB):
        return "object"
    if isinstance(column_type, DateTime):
        return "string"  # RFC 3339 date-time
    if isinstance(column_type, Text):
        return "string"
    return "string"


def register_builtin_layers(conn: psycopg.Connection) -> None:
    """Make sure every built-in layer has its catalogue row; keep what people entered."""
    for layer in BUILTIN_LAYERS:
        conn.execute(
            """
            INSERT INTO layer_catalogue
                (name, title, description, kind, table_name, geometry_type, property_schema)
            VALUES (%(name)s, %(title)s, %(description)s, %(kind)s, %(table)s, %(gtype)s,
                    %(schema)s)
            ON CONFLICT (name) DO UPDATE SET
                kind = EXCLUDED.kind,
                table_name = EXCLUDED.table_name,
                geometry_type = EXCLUDED.geometry_type,
                property_schema = EXCLUDED.property_schema
            """,
            {
                "name": layer.name,
                "title": layer.title,
                "description": layer.description,
                "kind": layer.kind,
                "table": layer.table_name,
                "gtype": layer.geometry_type,
                "schema": psycopg.types.json.Jsonb(property_schema(layer.model)),
            },
        )


def layer_table(conn: psycopg.Connection, name: str) -> str:
    """The table of a layer: a built-in's, or a scene's as registered (checked by pattern)."""
    builtin = BUILTIN_BY_NAME.get(name)
    if builtin is not None:
        return builtin.table_name
    return scene_table(conn, name)


def scene_table(conn: psycopg.Connection, name: str) -> str:
    """The table of a scene as registered (checked by pattern); NotFound naming the layers."""
    row = conn.execute(
        "SELECT table_name FROM layer_catalogue WHERE name = %s AND kind = 'scene'", (name,)
    ).fetchone()
    if row is None or not SCENE_TABLE.match(row[0]):
        names = [r[0] for r in conn.execute("SELECT name FROM layer_catalogue ORDER BY name")]
        raise NotFound(f"no layer named {name!r} (there are: {', '.join(names)})")
    return str(row[0])


def table_columns(conn: psycopg.Connection, table: str) -> dict[str, str]:
    """A table's columns and their types' short names (``text``, ``int4``, ``float8``,
    ``geometry`` …), in table order; ``table`` comes from the schema, never input (a
    temporary table of this session included)."""
    rows = conn.execute(
        "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum",
        (sql.Identifier(table).as_string(conn),),
    ).fetchall()
    return {name: kind for name, kind in rows}


def refresh_layer_statistics(conn: psycopg.Connection, name: str) -> None:
    """Recount a layer's features and extent after its data changed."""
    conn.execute(
        sql.SQL(
            """
            UPDATE layer_catalogue SET
                feature_count = stats.n,
                extent = stats.extent,
                updated_at = now()
            FROM (SELECT count(*) AS n,
                         -- Expanded a hair so one point or one line still makes a polygon.
                         ST_SetSRID(ST_Expand(ST_Extent(geom), 1e-9)::geometry, {srid}) AS extent
                  FROM {table}) AS stats
            WHERE layer_catalogue.name = %s
            """
        ).format(table=sql.Identifier(layer_table(conn, name)), srid=sql.Literal(schema.SRID)),
        (name,),
    )


# What the person importing says of a data set's terms, kept for the layer and each dataset.
INVENTORY_FIELDS = ("provider", "owner_unit", "licence", "update_cadence")


def grow_layer_statistics(
    conn: psycopg.Connection, name: str, added: int, bounds: tuple[float, float, float, float]
) -> None:
    """Count features just added to a layer and widen its extent to ``bounds``.

    For an import of new features only: no scan of the whole table, which at millions of
    features costs more than the import's own last batch.
    """
    conn.execute(
        sql.SQL(
            """
            UPDATE layer_catalogue SET
                feature_count = feature_count + %(added)s,
                extent = ST_SetSRID(Box2D(ST_Collect(
                    coalesce(extent, envelope.geom), envelope.geom))::geometry, {srid}),
                updated_at = now()
            FROM (SELECT ST_Expand(ST_MakeEnvelope(
                    %(xmin)s, %(ymin)s, %(xmax)s, %(ymax)s, {srid}), 1e-9) AS geom) AS envelope
            WHERE layer_catalogue.name = %(name)s
            """
        ).format(srid=sql.Literal(schema.SRID)),
        dict(zip(("xmin", "ymin", "xmax", "ymax"), bounds, strict=True), added=added, name=name),
    )


def update_layer_metadata(conn: psycopg.Connection, name: str, **fields: str) -> None:
    """Set a layer's inventory fields (provider, owner unit, licence, cadence, source CRS)."""
    allowed = {*INVENTORY_FIELDS, "source_crs", "description"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"not catalogue fields: {', '.join(sorted(unknown))}")
    if not fields:
        return
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(field), sql.Placeholder(field)) for field in fields
    )
    conn.execute(
        sql.SQL("UPDATE layer_catalogue SET {} WHERE name = %(layer)s").format(assignments),
        {**fields, "layer": name},
    )


def forget_dataset_terms(conn: psycopg.Connection, name: str, removed: dict[str, str]) -> None:
    """After a dataset left a layer: each inventory field (provider, owner unit, licence,
    cadence, source CRS) that showed the removed dataset's value shows instead that of the
    latest import among the datasets the layer still holds that gave one, or nothing.

    ``removed`` is the removed dataset's inventory entry. Values the layer has from
    elsewhere (a scene's owner, given when it was registered) stay as they are.
    """
    fields = [f for f in (*INVENTORY_FIELDS, "source_crs") if removed.get(f)]
    if not fields:
        return
    assignments = sql.SQL(", ").join(
        sql.SQL(
            """{field} = CASE WHEN layer_catalogue.{field} = {gone} THEN coalesce(
                (SELECT i.{field} FROM dataset_inventory i
                 WHERE i.layer = layer_catalogue.name AND i.{field} <> ''
                 ORDER BY i.imported_at DESC, i.dataset LIMIT 1), '')
               ELSE layer_catalogue.{field} END"""
        ).format(field=sql.Identifier(f), gone=sql.Placeholder(f))
        for f in fields
    )
    conn.execute(
        sql.SQL("UPDATE layer_catalogue SET {} WHERE name = %(layer)s").format(assignments),
        {**{f: removed[f] for f in fields}, "layer": name},
    )


_LIST_SQL = """
    SELECT name, title, description, kind, table_name, geometry_type, property_schema,
           provider, owner_unit, licence, update_cadence, source_crs, feature_count,
           CASE WHEN extent IS NULL THEN NULL ELSE
               ARRAY[ST_XMin(extent), ST_YMin(extent), ST_XMax(extent), ST_YMax(extent)]
           END AS bbox,
           updated_at
    FROM layer_catalogue
"""


def list_layers(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every layer of the catalogue, as plain dicts, in a stable order."""
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(_LIST_SQL + " ORDER BY kind = 'scene', name"))


def get_layer(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    """One layer's catalogue entry; NotFound when there is none of that name."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_LIST_SQL + " WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no layer named {name!r}")
    return row
