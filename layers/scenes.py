"""Scenes (个性化场景): layers a street registers at run time, without code or a restart.

A scene is a catalogue row (kind ``scene``) and a table ``scene_<name>`` with the columns
every feature has (id, dataset, source_id, properties, geom). Its declared properties live
in ``properties`` and are parsed by their declared type on import. The table name is made
here from a checked name, never taken from input as it is.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from layers.datasets import refuse_control
from layers.kinds import SOURCE_ID, Field, LayerKind
from layers.values import parse_bool, parse_integer, parse_number, parse_text, refuse_nul
from twin import catalogue, changes, registry
from twin.errors import Conflict, InvalidInput, NotFound
from twin.schema import SRID

NAME_PATTERN = registry.SCENE_NAME  # a scene's name and its properties' names
# What a scene may be, as people say it: its GeoJSON type and its column's type.
GEOMETRY_TYPES = {
    "point": ("Point", "POINT"),
    "linestring": ("LineString", "LINESTRING"),
    "line": ("LineString", "LINESTRING"),
    "polygon": ("MultiPolygon", "MULTIPOLYGON"),
    "multipolygon": ("MultiPolygon", "MULTIPOLYGON"),
}
# Taken already: what every feature has (its key, where it came from, its shape), which
# would shadow a property of the same name in the feature API and the queryables, and the
# feature API's own query parameters, which a filter by that name would collide with.
RESERVED_PROPERTIES = {"id", "dataset", "source_id", "properties", "updated_at", "geom",
                       "geometry", "type", "bbox", "limit", "offset", "datetime", "crs",
                       "filter", "sortby", "links", "after", "f"}  # fmt: skip
# What `twin import` and the import routes take besides layers (layers.incidents).
NOT_SCENE_NAMES = frozenset({"categories", "responsibilities"})
PROPERTY_TYPES = {
    "string": parse_text,
    "number": parse_number,
    "integer": parse_integer,
    "boolean": parse_bool,
}


def create_scene(
    conn: psycopg.Connection,
    name: str,
    *,
    geometry_type: str,
    properties: dict[str, str],
    title: str | None = None,
    owner_unit: str = "",
    description: str = "",
) -> dict[str, Any]:
    """Register a scene layer and make its table; returns its catalogue entry."""
    for what, text in (("the description", description),
                       ("the geometry type", geometry_type)):  # fmt: skip
        refuse_nul(what, text)
    for what, text in (("the title", title), ("the owner unit", owner_unit),
                       ("the name", name)):  # fmt: skip
        refuse_control(what, text)
    if not NAME_PATTERN.match(name):
        raise InvalidInput(
            f"scene name {name[:60]!r}: use 2-40 lower-case letters, digits or _, starting "
            "with a letter"
        )
    if name in registry.BUILTIN:
        raise InvalidInput(f"{name!r} is a built-in layer; choose another scene name")
    if name in NOT_SCENE_NAMES:  # `twin import categories FILE` must mean the categories
        raise InvalidInput(f"{name!r} names the incident {name} (twin import {name}); choose "
                           "another scene name")  # fmt: skip
    geometry = GEOMETRY_TYPES.get(geometry_type.strip().lower())
    if geometry is None:
        raise InvalidInput(f"geometry type {geometry_type!r}: choose Point, LineString or Polygon")
    schema_properties: dict[str, Any] = {}
    for prop, kind in properties.items():
        if not NAME_PATTERN.match(prop):
            raise InvalidInput(
                f"property name {prop!r}: use 2-40 lower-case letters, digits or _, "
                "starting with a letter"
            )
        if prop in RESERVED_PROPERTIES:
            raise InvalidInput(
                f"property name {prop!r} is taken, by every feature's own fields or the "
                f"feature API's parameters ({', '.join(sorted(RESERVED_PROPERTIES))}); "
                "choose another"
            )
        if kind not in PROPERTY_TYPES:
            raise InvalidInput(
                f"property {prop}: type {kind!r} is not one of {', '.join(PROPERTY_TYPES)}"
            )
        schema_properties[prop] = {"type": kind}
    exists = conn.execute("SELECT 1 FROM layer_catalogue WHERE name = %s", (name,)).fetchone()
    if exists:
        raise Conflict(f"a layer named {name!r} exists already; choose another scene name")
    table = registry.scene_table(name)
    with conn.transaction():
        conn.execute(
            sql.SQL(
                """
                CREATE TABLE {table} (
                    id bigserial PRIMARY KEY,
                    dataset text NOT NULL DEFAULT '',
                    source_id text,
                    properties jsonb NOT NULL DEFAULT '{{}}',
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    geom geometry({gtype}, {srid}) NOT NULL,
                    UNIQUE (dataset, source_id)
                )
                """
            ).format(
                table=sql.Identifier(table),
                gtype=sql.SQL(geometry[1]),
                srid=sql.Literal(SRID),
            )
        )
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} USING gist (geom)").format(
                sql.Identifier(f"idx_{table}_geom"), sql.Identifier(table)
            )
        )
        conn.execute(
            """
            INSERT INTO layer_catalogue (name, title, description, kind, table_name,
                                         geometry_type, property_schema, owner_unit)
            VALUES (%s, %s, %s, 'scene', %s, %s, %s, %s)
            """,
            (
                name,
                title or name,
                description,
                table,
                geometry[0],
                Jsonb({"type": "object", "properties": schema_properties}),
                owner_unit,
            ),
        )
        changes.record(conn, name, "scene_create", box=None, table=table)
    return catalogue.get_layer(conn, name)


def scene_kind(conn: psycopg.Connection, name: str) -> LayerKind:
    """The import target of a registered scene."""
    layer = registry.resolve(conn, name)
    if layer.kind != "scene":
        raise NotFound(f"no scene named {name!r}")
    fields = [SOURCE_ID] + [
        Field(prop, PROPERTY_TYPES[spec.get("type", "string")], (prop,))
        for prop, spec in layer.properties.items()
    ]
    return LayerKind(layer, tuple(fields), fields_in_properties=True)


def drop_scene(conn: psycopg.Connection, name: str) -> None:
    """Remove a scene layer and its features; the change log says where they were."""
    kind = scene_kind(conn, name)
    with conn.transaction():
        table = sql.Identifier(kind.table)
        box = changes.box_of(conn, sql.SQL("SELECT geom FROM {}").format(table))
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        conn.execute(sql.SQL("DROP TABLE {}").format(table))
        conn.execute("DELETE FROM layer_catalogue WHERE name = %s AND kind = 'scene'", (name,))
        changes.record(
            conn, name, "scene_drop", box=box, features=int(row[0]) if row else 0, table=None
        )
