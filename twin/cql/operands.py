"""The values of a filter (properties, literals, functions, geometries) as SQL with their
type, checked against the collection's queryables; comparisons of mismatched types refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import shapely
from psycopg import sql
from pygeofilter import ast, values

from twin.cql.checks import check_parts, check_position, check_text, is_number, positions
from twin.cql.literals import date_literal, is_interval, timestamp_literal
from twin.cql.words import EXAMPLE_TIMESTAMP, NOT_SUPPORTED, article, as_written, refuse
from twin.spatial import invalid_reason  # GEOS's reason in words, as for /within's areas

Column = Callable[[str], sql.Composable]  # property name -> SQL for it (raises when unknown)

_INT64 = 2**63
_TIME_PROPERTIES = ("updated_at", "latest_at")  # the timestamptz columns of every layer
GEOMETRY_PROPERTIES = ("geometry", "geom")
_ARITHMETIC = (ast.Add, ast.Sub, ast.Mul, ast.Div)
_KNOWN_FUNCTIONS = "CASEI, BBOX, TIMESTAMP, DATE and INTERVAL"


@dataclass
class Operand:
    """A value in the filter: its SQL, its type family and how to name it in a message."""

    sql: sql.Composable
    family: str  # number, string, boolean, time, geometry, object
    label: str
    kind: str  # the type as the client knows it (integer, number, string, timestamp …)
    is_property: bool = False


class Operands:
    """Reads a filter's values; the compiler's conditions stand on it (see ``to_sql``)."""

    def __init__(
        self, column: Column, geometry: sql.Composable, srid: int, types: dict[str, str]
    ) -> None:
        self.column = column
        self.geometry = geometry
        self.srid = srid
        self.types = types

    # values

    def operand(self, node: Any) -> Operand:
        if isinstance(node, ast.Attribute):
            return self.property(node.name)
        if isinstance(node, bool):
            return Operand(sql.Literal(node), "boolean", as_written(node), "boolean")
        if isinstance(node, int):
            if not -_INT64 <= node < _INT64:
                refuse(f"the number {as_written(node)[:20]}… is beyond a 64-bit integer")
            return Operand(sql.Literal(node), "number", as_written(node), "number")
        if isinstance(node, float):
            if not math.isfinite(node):
                refuse(f"the number {node} is not finite")
            return Operand(sql.Literal(node), "number", as_written(node), "number")
        if isinstance(node, str):
            check_text(node)
            return Operand(sql.Literal(node), "string", as_written(node), "string")
        if isinstance(node, datetime):
            if node.tzinfo is None:
                refuse(f"{as_written(node)} needs a time zone: end it with Z or +08:00")
            return Operand(sql.Literal(node), "time", as_written(node), "timestamp")
        if isinstance(node, date):
            return Operand(sql.Literal(node), "time", as_written(node), "date")
        if isinstance(node, ast.Function):
            return self.function(node)
        if isinstance(node, values.Geometry):
            return Operand(self.geometry_literal(node), "geometry", "a geometry", "geometry")
        if isinstance(node, _ARITHMETIC):
            refuse("arithmetic (+, -, *, /) is not supported; compare a property with a value")
        if is_interval(node):
            refuse("an interval can only follow T_DURING or T_INTERSECTS")
        if isinstance(node, list):
            refuse("a list of values belongs after IN")
        if isinstance(node, ast.Node):
            refuse("a condition stands where a value is expected")
        refuse(f"{type(node).__name__} cannot be used here")

    def property(self, name: str) -> Operand:
        if name in GEOMETRY_PROPERTIES:
            return Operand(self.geometry, "geometry", name, "geometry", True)
        if len(name) > 63:  # PostgreSQL's longest name; no queryable is longer
            refuse(f"{name[:40]}… is not a queryable (names are at most 63 characters)")
        if name.upper() == "NULL":  # the grammar reads a bare NULL as a property name
            refuse("NULL is not a value in CQL2; test for a missing value with IS NULL")
        column = self.column(name)  # refuses names that are not queryables
        kind = self.types.get(name, "string")
        if name in _TIME_PROPERTIES:
            kind = "timestamp"
        family = {"integer": "number", "number": "number", "boolean": "boolean",
                  "timestamp": "time", "object": "object"}.get(kind, "string")  # fmt: skip
        return Operand(column, family, name, kind, True)

    def function(self, node: ast.Function) -> Operand:
        name, args = node.name.lower(), node.arguments
        if name == "casei":
            if len(args) != 1:
                refuse(f"CASEI takes one argument, not {len(args)}")
            inner = self.operand(args[0])
            if inner.family != "string":
                refuse(f"CASEI takes text; {inner.label} is {article(inner.kind)} {inner.kind}")
            return Operand(
                sql.SQL("lower({})").format(inner.sql), "string", f"CASEI({inner.label})",
                "string", inner.is_property,
            )  # fmt: skip
        if name in NOT_SUPPORTED:
            refuse(NOT_SUPPORTED[name])
        if name == "bbox":
            return Operand(self.bbox(args), "geometry", "BBOX(…)", "geometry")
        if name in ("timestamp", "date") and len(args) == 1 and isinstance(args[0], str):
            value = timestamp_literal(args[0]) if name == "timestamp" else date_literal(args[0])
            return self.operand(value)
        if name == "interval":
            refuse("an interval can only follow T_DURING or T_INTERSECTS")
        shown = name if len(name) <= 40 else name[:40] + "…"
        refuse(
            f"{shown}() is not a function or operator here; the functions are {_KNOWN_FUNCTIONS}"
        )

    def comparable(self, a: Operand, b: Operand) -> None:
        """Refuse comparing values of different types; the message names both."""
        for side in (a, b):
            if side.family == "geometry":
                refuse(f"{side.label} is a geometry; compare it with S_INTERSECTS, S_WITHIN …")
            if side.family == "object":
                refuse(f"{side.label} holds several values and cannot be compared")
        if a.family == b.family:
            return
        prop, other = (a, b) if a.is_property or not b.is_property else (b, a)
        if prop.is_property and other.is_property:
            refuse(
                f"{a.label} is {article(a.kind)} {a.kind} and {b.label} is "
                f"{article(b.kind)} {b.kind}; they cannot be compared"
            )
        if prop.is_property and prop.family == "time" and other.family == "string":
            refuse(
                f"{prop.label} is a timestamp; compare it with {EXAMPLE_TIMESTAMP}, not {other.label}"
            )
        if prop.is_property:
            refuse(f"{prop.label} is {article(prop.kind)} {prop.kind}; {other.label} is not")
        refuse(f"{a.label} ({a.kind}) and {b.label} ({b.kind}) cannot be compared")

    # geometries

    def spatial(self, node: Any, name: str) -> sql.Composable:
        if isinstance(node, ast.Attribute):
            value = self.property(node.name)
            if value.family != "geometry":
                refuse(
                    f"{name} takes geometries; {value.label} is {article(value.kind)} "
                    f"{value.kind} (the geometry property is called geometry)"
                )
            return value.sql
        value = self.operand(node)
        if value.family != "geometry":
            refuse(f"{name} takes geometries; {value.label} is not one")
        return value.sql

    def geometry_literal(self, node: values.Geometry) -> sql.Composable:
        shape = node.geometry
        kind = str(shape.get("type", "geometry"))[:30]
        crs = shape.get("crs")
        if crs is not None and crs not in (4326, "4326"):
            refuse(f"the {kind} is read in longitude/latitude (CRS84); SRID={str(crs)[:12]} is not")
        for number, position in enumerate(positions(shape), 1):
            check_position(position, f"the {kind}'s position {number}")
        check_parts(shape)
        try:
            geom = shapely.geometry.shape({k: v for k, v in shape.items() if k != "crs"})
        except Exception:  # shapely's and GEOS's words are not the client's
            refuse(f"the geometry ({kind}) cannot be read: its coordinates are not a {kind}'s")
        if geom.is_empty:
            refuse(f"the geometry ({kind}) is empty")
        if not shapely.is_valid(geom):
            polygonal = geom.geom_type in ("Polygon", "MultiPolygon", "GeometryCollection")
            reason = invalid_reason(geom) if polygonal else "a line's positions are all one point"
            refuse(f"the geometry ({kind}) is not valid: {reason}")
        return sql.SQL("ST_Transform(ST_GeomFromText({}, 4326), {})").format(
            sql.Literal(geom.wkt), sql.Literal(self.srid)
        )

    def bbox(self, args: list[Any]) -> sql.Composable:
        if len(args) not in (4, 6) or not all(is_number(a) for a in args):
            refuse("BBOX takes four numbers: minx, miny, maxx, maxy (longitudes, latitudes)")
        if len(args) == 6:  # minx, miny, minz, maxx, maxy, maxz
            args = [args[0], args[1], args[3], args[4]]
        west, south, east, north = (float(a) for a in args)
        check_position([west, south], "BBOX's south-west corner")
        check_position([east, north], "BBOX's north-east corner")
        if south > north:
            refuse(f"BBOX's southern edge {south:g} is north of its northern edge {north:g}")
        box = "ST_MakeEnvelope({}, {}, {}, {}, 4326)"
        if west <= east:
            envelope = sql.SQL(box).format(*map(sql.Literal, (west, south, east, north)))
        else:  # across the antimeridian: the two sides of 180°
            envelope = sql.SQL(f"ST_Collect({box}, {box})").format(
                *map(sql.Literal, (west, south, 180.0, north, -180.0, south, east, north))
            )
        return sql.SQL("ST_Transform({}, {})").format(envelope, sql.Literal(self.srid))
