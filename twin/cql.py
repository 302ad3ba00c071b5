"""CQL2 filters (text and JSON) compiled to parameterised SQL.

pygeofilter parses; this module walks its tree and writes SQL with every value as a
parameter and every property name checked against the collection's queryables. Anything
it does not know is refused with a message, never passed through.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import shapely
from psycopg import sql
from pygeofilter import ast, values
from pygeofilter.parsers.cql2_json import parse as parse_json
from pygeofilter.parsers.cql2_text import parse as parse_text

from twin.errors import InvalidInput

Column = Callable[[str], sql.Composable]  # property name -> SQL for it (raises when unknown)

_COMPARISONS = {
    ast.Equal: "=",
    ast.NotEqual: "<>",
    ast.LessThan: "<",
    ast.LessEqual: "<=",
    ast.GreaterThan: ">",
    ast.GreaterEqual: ">=",
}
_SPATIAL = {
    ast.GeometryIntersects: "ST_Intersects",
    ast.GeometryWithin: "ST_Within",
    ast.GeometryContains: "ST_Contains",
    ast.GeometryDisjoint: "ST_Disjoint",
    ast.GeometryTouches: "ST_Touches",
    ast.GeometryOverlaps: "ST_Overlaps",
    ast.GeometryCrosses: "ST_Crosses",
    ast.GeometryEquals: "ST_Equals",
}
_TEMPORAL = {
    ast.TimeAfter: ">",
    ast.TimeBefore: "<",
    ast.TimeEquals: "=",
}


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def parse(text: str, lang: str = "cql2-text") -> ast.Node:
    """The filter's syntax tree; InvalidInput naming the problem when it does not parse."""
    if lang == "cql-text":  # the draft's name, which GDAL 3.6 sends; its filters are CQL2 text
        lang = "cql2-text"
    try:
        if lang == "cql2-json":
            return parse_json(json.loads(text))
        if lang == "cql2-text":
            return parse_text(text)
    except InvalidInput:
        raise
    except Exception as exc:  # the parsers raise lark and ValueError kinds alike
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "__init__" in first or "()" in first or "object is not" in first:
            first = (
                "an operator is missing its arguments, or has the wrong kind"  # parser internals
            )
        raise InvalidInput(f"filter is not valid {lang}: {first[:200]}") from exc
    raise InvalidInput(f"filter-lang {lang!r}: use cql2-text or cql2-json")


def compile_filter(
    node: ast.Node,
    column: Column,
    geometry: sql.Composable,
    srid: int,
    types: dict[str, str] | None = None,
) -> sql.Composable:
    """SQL for the filter tree; ``column`` maps property names, ``geometry`` is the geometry
    column, ``types`` the queryables' JSON types (values are checked against them)."""
    try:
        return _Compiler(column, geometry, srid, types or {}).visit(node)
    except RecursionError as exc:
        raise InvalidInput("filter: too many terms nested; split it or use IN") from exc


class _Compiler:
    def __init__(
        self, column: Column, geometry: sql.Composable, srid: int, types: dict[str, str]
    ) -> None:
        self.column = column
        self.geometry = geometry
        self.srid = srid
        self.types = types

    def visit(self, node: Any) -> sql.Composable:
        if isinstance(node, ast.And):
            return sql.SQL("({} AND {})").format(self.visit(node.lhs), self.visit(node.rhs))
        if isinstance(node, ast.Or):
            return sql.SQL("({} OR {})").format(self.visit(node.lhs), self.visit(node.rhs))
        if isinstance(node, ast.Not):
            return sql.SQL("(NOT {})").format(self.visit(node.sub_node))
        for kind, operator in _COMPARISONS.items():
            if isinstance(node, kind):
                self.check_types(node.lhs, [node.rhs])
                return sql.SQL("({} {} {})").format(
                    self.value(node.lhs), sql.SQL(operator), self.value(node.rhs)
                )
        if isinstance(node, ast.Like):
            op = "ILIKE" if node.nocase else "LIKE"
            pattern = self._like_pattern(node)
            if pattern.endswith("\\") and not pattern.endswith("\\\\"):
                raise InvalidInput("filter: a LIKE pattern cannot end with a backslash")
            return sql.SQL("({}::text {}{} {})").format(
                self.value(node.lhs), sql.SQL("NOT " if node.not_ else ""), sql.SQL(op),
                sql.Literal(pattern),
            )  # fmt: skip
        if isinstance(node, ast.In):
            self.check_types(node.lhs, list(node.sub_nodes))
            items = sql.SQL(", ").join(self.value(v) for v in node.sub_nodes)
            return sql.SQL("({} {}IN ({}))").format(
                self.value(node.lhs), sql.SQL("NOT " if node.not_ else ""), items
            )
        if isinstance(node, ast.Between):
            self.check_types(node.lhs, [node.low, node.high])
            return sql.SQL("({} {}BETWEEN {} AND {})").format(
                self.value(node.lhs), sql.SQL("NOT " if node.not_ else ""),
                self.value(node.low), self.value(node.high),
            )  # fmt: skip
        if isinstance(node, ast.IsNull):
            return sql.SQL("({} IS {}NULL)").format(
                self.value(node.lhs), sql.SQL("NOT " if node.not_ else "")
            )
        for kind, function in _SPATIAL.items():
            if isinstance(node, kind):
                return sql.SQL("{}({}, {})").format(
                    sql.SQL(function), self.spatial(node.lhs), self.spatial(node.rhs)
                )
        for kind, operator in _TEMPORAL.items():
            if isinstance(node, kind):
                self.check_types(node.lhs, [node.rhs])
                return sql.SQL("({} {} {})").format(
                    self.value(node.lhs), sql.SQL(operator), self.value(node.rhs)
                )
        if isinstance(node, ast.TimeDuring) and isinstance(node.rhs, values.Interval):
            return sql.SQL("({0} >= {1} AND {0} <= {2})").format(
                self.value(node.lhs), self.value(node.rhs.start), self.value(node.rhs.end)
            )
        if isinstance(node, bool):
            return sql.SQL("TRUE" if node else "FALSE")
        raise InvalidInput(f"filter: {type(node).__name__} is not supported")

    def check_types(self, lhs: Any, literals: list[Any]) -> None:
        """A property compared with literals of another type is the client's mistake: 400."""
        if not isinstance(lhs, ast.Attribute):
            return
        if lhs.name in ("geometry", "geom"):
            raise InvalidInput("filter: compare the geometry with S_INTERSECTS, S_WITHIN …")
        kind = self.types.get(lhs.name)
        for literal in literals:
            if isinstance(literal, ast.Attribute) or kind is None:
                continue
            fits = {
                "number": isinstance(literal, int | float) and not isinstance(literal, bool),
                "integer": isinstance(literal, int) and not isinstance(literal, bool),
                "boolean": isinstance(literal, bool),
                "string": isinstance(literal, str | datetime | date),
            }.get(kind, False)
            if lhs.name in ("updated_at", "latest_at"):
                fits = isinstance(literal, datetime | date)
            if not fits:
                shown = repr(literal)[:40]
                raise InvalidInput(f"filter: {lhs.name} is {_article(kind)} {kind}; {shown} is not")

    def value(self, node: Any) -> sql.Composable:
        if isinstance(node, ast.Attribute):
            return self.column(node.name)
        if isinstance(node, bool | int | float | str):
            return sql.Literal(node)
        if isinstance(node, datetime | date):
            return sql.Literal(node)
        if isinstance(node, values.Interval):
            raise InvalidInput("filter: an interval can only follow T_DURING")
        if isinstance(node, ast.Function):
            raise InvalidInput(f"filter: function {node.name}() is not supported")
        raise InvalidInput(f"filter: {type(node).__name__} cannot be compared")

    def spatial(self, node: Any) -> sql.Composable:
        if isinstance(node, ast.Attribute):
            self.column(node.name)  # checked: it must be the geometry queryable
            return self.geometry
        if isinstance(node, values.Geometry):
            try:
                geom = shapely.geometry.shape(node.geometry)
            except (
                ValueError,
                TypeError,
                KeyError,
                AttributeError,
                shapely.errors.ShapelyError,
            ) as exc:
                raise InvalidInput(
                    f"filter: a geometry that cannot be read ({str(exc)[:80]})"
                ) from exc
            return self._literal_geometry(geom)
        if isinstance(node, values.Envelope):
            # pygeofilter fills Envelope(x1, x2, y1, y2) from a CQL2-JSON bbox array in its
            # order (minx, miny, maxx, maxy): x2 holds miny and y1 holds maxx.
            geom = shapely.box(node.x1, node.x2, node.y1, node.y2)
            return self._literal_geometry(geom)
        if isinstance(node, ast.Function) and node.name.lower() == "bbox":
            numbers = [float(a) for a in node.arguments]
            if len(numbers) != 4:
                raise InvalidInput("filter: BBOX takes four numbers")
            return self._literal_geometry(shapely.box(*numbers))
        raise InvalidInput(f"filter: {type(node).__name__} is not a geometry")

    def _literal_geometry(self, geom: Any) -> sql.Composable:
        if not shapely.is_valid(geom) or geom.is_empty:
            raise InvalidInput(f"filter: geometry {geom.wkt[:80]} is not valid")
        return sql.SQL("ST_Transform(ST_GeomFromText({}, 4326), {})").format(
            sql.Literal(geom.wkt), sql.Literal(self.srid)
        )

    @staticmethod
    def _like_pattern(node: ast.Like) -> str:
        pattern = node.pattern
        if node.wildcard != "%":
            pattern = pattern.replace(node.wildcard, "%")
        if node.singlechar not in ("_", "."):
            pattern = pattern.replace(node.singlechar, "_")
        return pattern
