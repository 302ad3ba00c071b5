"""The layer catalogue: the data inventory (数据清单) every API answer and tile is made from.

Each layer is one row: what it is, where its features live, who provides and owns it, its
licence, cadence, source CRS, extent and count. The built-in kinds are registered on every
start; their property schema is derived from the table itself, so it cannot drift.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from twin import registry


def property_schema(layer: registry.Layer) -> dict[str, Any]:
    """A JSON Schema of a built-in layer's properties, read off the table's columns."""
    assert layer.model is not None
    properties: dict[str, Any] = {}
    for column in layer.model.__table__.columns:
        if column.name == "geom" or column.name in layer.hidden:
            continue
        properties[column.name] = {"type": layer.columns[column.name]}
        if column.comment:
            properties[column.name]["description"] = column.comment
    return {"type": "object", "properties": properties}


def register_builtin_layers(conn: psycopg.Connection) -> None:
    """Make sure every built-in layer has its catalogue row; keep what people entered."""
    for layer in registry.BUILTIN_LAYERS:
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
                "table": layer.table,
                "gtype": layer.geometry_type,
                "schema": psycopg.types.json.Jsonb(property_schema(layer)),
            },
        )


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


# What the person importing says of a data set's terms, kept for the layer and each dataset.
INVENTORY_FIELDS = ("provider", "owner_unit", "licence", "update_cadence")


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


def list_layers(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every layer of the catalogue, as plain dicts, in a stable order."""
    return list(registry.load(conn).entries.values())


def get_layer(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    """One layer's catalogue entry; NotFound when there is none of that name."""
    return registry.load(conn).entry(name)
