"""A filter's syntax tree compiled to parameterised SQL over a collection's queryables:
every value a literal composed by psycopg, every condition's operands checked first.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from psycopg import sql
from pygeofilter import ast, values
from pygeofilter.cql2 import SPATIAL_PREDICATES_MAP, TEMPORAL_PREDICATES_MAP

from twin.cql.literals import day_span, instant_literal, interval_end, is_interval
from twin.cql.operands import GEOMETRY_PROPERTIES, Column, Operand, Operands
from twin.cql.words import MAX_DEPTH, TimeIntersects, article, refuse

_COMPARISONS = {
    ast.Equal: "=",
    ast.NotEqual: "<>",
    ast.LessThan: "<",
    ast.LessEqual: "<=",
    ast.GreaterThan: ">",
    ast.GreaterEqual: ">=",
}
_SPATIAL_SQL = {
    ast.GeometryIntersects: "ST_Intersects",
    ast.GeometryWithin: "ST_Within",
    ast.GeometryContains: "ST_Contains",
    ast.GeometryDisjoint: "ST_Disjoint",
    ast.GeometryTouches: "ST_Touches",
    ast.GeometryOverlaps: "ST_Overlaps",
    ast.GeometryCrosses: "ST_Crosses",
    ast.GeometryEquals: "ST_Equals",
}
_SPATIAL_NAMES = {kind: name.upper() for name, kind in SPATIAL_PREDICATES_MAP.items()}
_TEMPORAL_NAMES = {
    kind: name.upper() for name, kind in TEMPORAL_PREDICATES_MAP.items() if name != "t_intersects"
}
_INSTANT_OPERATORS = {ast.TimeAfter: ">", ast.TimeBefore: "<", ast.TimeEquals: "="}
_SUPPORTED_TEMPORAL = "T_AFTER, T_BEFORE, T_EQUALS, T_DURING and T_INTERSECTS"


def compile_filter(
    node: Any,
    column: Column,
    geometry: sql.Composable,
    srid: int,
    types: dict[str, str] | None = None,
) -> sql.Composable:
    """SQL for the filter tree; ``column`` maps property names, ``geometry`` is the geometry
    column, ``types`` the queryables' JSON types (operands are checked against them)."""
    try:
        return Compiler(column, geometry, srid, types or {}).condition(node)
    except RecursionError:
        refuse(f"nested more than {MAX_DEPTH} levels deep")


class Compiler(Operands):
    """The conditions of a filter as SQL; the values in them are read by ``Operands``."""

    def __init__(
        self, column: Column, geometry: sql.Composable, srid: int, types: dict[str, str]
    ) -> None:
        super().__init__(column, geometry, srid, types)
        self.depth = 0

    # conditions

    def condition(self, node: Any) -> sql.Composable:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                refuse(f"nested more than {MAX_DEPTH} levels deep")
            return self._condition(node)
        finally:
            self.depth -= 1

    def _condition(self, node: Any) -> sql.Composable:
        if isinstance(node, ast.And | ast.Or):
            # A chain of hundreds of ORs is one level, read without recursion.
            word = " AND " if isinstance(node, ast.And) else " OR "
            terms = [self.condition(t) for t in _chain(node)]
            return sql.SQL("({})").format(sql.SQL(word).join(terms))
        if isinstance(node, ast.Not):
            return sql.SQL("(NOT {})").format(self.condition(node.sub_node))
        if type(node) in _COMPARISONS:
            lhs, rhs = self.operand(node.lhs), self.operand(node.rhs)
            self.comparable(lhs, rhs)
            operator = sql.SQL(_COMPARISONS[type(node)])
            return sql.SQL("({} {} {})").format(lhs.sql, operator, rhs.sql)
        if isinstance(node, ast.Like):
            return self.like(node)
        if isinstance(node, ast.In):
            lhs = self.operand(node.lhs)
            items = [self.operand(v) for v in node.sub_nodes]
            for item in items:
                self.comparable(lhs, item)
            return sql.SQL("({} {}IN ({}))").format(
                lhs.sql, sql.SQL("NOT " if node.not_ else ""),
                sql.SQL(", ").join(i.sql for i in items),
            )  # fmt: skip
        if isinstance(node, ast.Between):
            lhs, low, high = (self.operand(n) for n in (node.lhs, node.low, node.high))
            for bound in (low, high):
                self.comparable(lhs, bound)
            if lhs.family not in ("number", "string", "time"):
                refuse(
                    f"BETWEEN takes numbers, text or times; {lhs.label} is {article(lhs.kind)} {lhs.kind}"
                )
            return sql.SQL("({} {}BETWEEN {} AND {})").format(
                lhs.sql, sql.SQL("NOT " if node.not_ else ""), low.sql, high.sql
            )
        if isinstance(node, ast.IsNull):
            if isinstance(node.lhs, ast.Attribute) and node.lhs.name in GEOMETRY_PROPERTIES:
                target: sql.Composable = self.geometry
            else:
                target = self.operand(node.lhs).sql
            return sql.SQL("({} IS {}NULL)").format(target, sql.SQL("NOT " if node.not_ else ""))
        if type(node) in _SPATIAL_SQL:
            name = _SPATIAL_NAMES[type(node)]
            return sql.SQL("{}({}, {})").format(
                sql.SQL(_SPATIAL_SQL[type(node)]),
                self.spatial(node.lhs, name),
                self.spatial(node.rhs, name),
            )
        if type(node) in _INSTANT_OPERATORS or isinstance(node, TimeIntersects | ast.TimeDuring):
            return self.temporal(node)
        if isinstance(node, ast.TemporalPredicate):
            name = _TEMPORAL_NAMES.get(type(node), type(node).__name__)
            refuse(f"{name} is not supported; use {_SUPPORTED_TEMPORAL}")
        if isinstance(node, ast.Include):
            return sql.SQL("FALSE" if node.not_ else "TRUE")
        if isinstance(node, bool):
            return sql.SQL("TRUE" if node else "FALSE")
        if isinstance(node, ast.Attribute):
            value = self.operand(node)
            if value.family == "boolean":
                return sql.SQL("({} IS TRUE)").format(value.sql)
            refuse(f"{value.label} is {article(value.kind)} {value.kind}, not a condition")
        if isinstance(node, ast.Predicate):
            refuse(f"{type(node).__name__} is not supported")
        refuse(f"{self.operand(node).label} is a value, not a condition; compare it with something")

    def like(self, node: ast.Like) -> sql.Composable:
        lhs = self.operand(node.lhs)
        if lhs.family != "string":
            refuse(f"LIKE compares text; {lhs.label} is {article(lhs.kind)} {lhs.kind}")
        pattern = self.operand(node.pattern)
        if (
            pattern.family != "string"
            or pattern.is_property
            or not isinstance(_unwrapped(node.pattern), str)
        ):
            refuse("the pattern after LIKE is text in quotes, such as '%路%'")
        text = _unwrapped(node.pattern)
        if (len(text) - len(text.rstrip("\\"))) % 2:
            refuse("a LIKE pattern cannot end with a backslash (it escapes the next character)")
        return sql.SQL("({} {}{} {})").format(
            lhs.sql, sql.SQL("NOT " if node.not_ else ""),
            sql.SQL("ILIKE" if node.nocase else "LIKE"), pattern.sql,
        )  # fmt: skip

    def temporal(self, node: Any) -> sql.Composable:
        name = "T_INTERSECTS" if isinstance(node, TimeIntersects) else _TEMPORAL_NAMES[type(node)]
        lhs = self.operand(node.lhs)
        if lhs.family != "time":
            refuse(f"{name} compares times; {lhs.label} is {article(lhs.kind)} {lhs.kind}")
        if not is_interval(node.rhs) and not isinstance(node, ast.TimeDuring):
            return self.against_instant(node, lhs)
        if type(node) in _INSTANT_OPERATORS:
            refuse(f"{name} takes an instant; for an interval use T_DURING or T_INTERSECTS")
        start, end = self.interval(node.rhs, name)
        # T_DURING: strictly inside; T_INTERSECTS: inside or on an end. A date bound is its
        # whole day: the start bound from 00:00 UTC, the end bound up to the next day's 00:00.
        low = ">" if isinstance(node, ast.TimeDuring) else ">="
        parts = [sql.SQL("{} IS NOT NULL").format(lhs.sql)]
        if start is not None:
            first = start if isinstance(start, datetime) else day_span(start)[0]
            parts.append(sql.SQL("{} {} {}").format(lhs.sql, sql.SQL(low), sql.Literal(first)))
        if isinstance(end, datetime):
            high = "<" if isinstance(node, ast.TimeDuring) else "<="
            parts.append(sql.SQL("{} {} {}").format(lhs.sql, sql.SQL(high), sql.Literal(end)))
        elif end is not None:
            parts.append(sql.SQL("{} < {}").format(lhs.sql, sql.Literal(day_span(end)[1])))
        return sql.SQL("({})").format(sql.SQL(" AND ").join(parts))

    def against_instant(self, node: Any, lhs: Operand) -> sql.Composable:
        """T_AFTER, T_BEFORE, T_EQUALS or T_INTERSECTS an instant; a date is its whole day."""
        day = instant_literal(node.rhs)
        if day is None or isinstance(day, datetime):
            rhs = self.operand(node.rhs)
            self.comparable(lhs, rhs)
            operator = sql.SQL(_INSTANT_OPERATORS.get(type(node), "="))
            return sql.SQL("({} {} {})").format(lhs.sql, operator, rhs.sql)
        start, next_day = (sql.Literal(t) for t in day_span(day))
        if isinstance(node, ast.TimeAfter):
            return sql.SQL("({} >= {})").format(lhs.sql, next_day)
        if isinstance(node, ast.TimeBefore):
            return sql.SQL("({} < {})").format(lhs.sql, start)
        return sql.SQL("({} >= {} AND {} < {})").format(lhs.sql, start, lhs.sql, next_day)

    def interval(self, node: Any, name: str) -> tuple[date | None, date | None]:
        if isinstance(node, values.Interval):
            ends = [node.start, node.end]
        elif (
            isinstance(node, ast.Function) and node.name == "interval" and len(node.arguments) == 2
        ):
            ends = list(node.arguments)
        else:
            refuse(f"{name} takes an interval, INTERVAL('2024-01-01', '..')")
        read: list[date | None] = []
        for end, which in zip(ends, ("start", "end"), strict=True):
            if isinstance(end, str):
                end = interval_end(end, which)
            elif isinstance(end, ast.Function):
                end = instant_literal(end)
                if end is None:
                    refuse(f"{name}: an interval's ends are dates, timestamps or '..'")
            if end is not None and not isinstance(end, date):
                refuse(f"{name}: an interval's ends are dates, timestamps or '..'")
            read.append(end)
        return read[0], read[1]


def _chain(node: ast.And | ast.Or) -> list[Any]:
    """The terms of a chain of one operator (a AND b AND c …), in order, without recursion."""
    kind, terms, stack = type(node), [], [node]
    while stack:
        item = stack.pop()
        if type(item) is kind:
            stack += [item.rhs, item.lhs]
        else:
            terms.append(item)
    return terms


def _unwrapped(node: Any) -> Any:
    """The literal inside CASEI(…), or the node itself."""
    while isinstance(node, ast.Function) and node.name == "casei" and len(node.arguments) == 1:
        node = node.arguments[0]
    return node
