"""CQL2 filters (text and JSON) compiled to parameterised SQL.

pygeofilter's grammar parses CQL2 text (with our transformer, which checks literals as it
reads them); CQL2-JSON is read here, since it is JSON already and pygeofilter 0.4 misreads
parts of it (``between``, ``casei``). Both give pygeofilter's syntax tree, which this module
walks to write SQL: every value a literal composed by psycopg, every property name checked
against the collection's queryables, every operand's type checked before anything reaches
the data base. Anything it does not know is refused in the client's words, never passed
through and never answered with the parser's own text.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import lark
import shapely
from psycopg import sql
from pygeofilter import ast, values
from pygeofilter.cql2 import SPATIAL_PREDICATES_MAP, TEMPORAL_PREDICATES_MAP
from pygeofilter.parsers.cql2_text import parser as _pygeofilter_text

from twin.crs import coordinate_fault
from twin.errors import InvalidInput
from twin.spatial import invalid_reason  # GEOS's reason in words, as for /within's areas

Column = Callable[[str], sql.Composable]  # property name -> SQL for it (raises when unknown)

LANGS = ("cql2-text", "cql2-json")
MAX_DEPTH = 100  # levels of nested conditions; far beyond any hand-written filter
_MAX_DIGITS = 25  # longer integers are refused before Python is asked to read them
_INT64 = 2**63
_TIME_PROPERTIES = ("updated_at", "latest_at")  # the timestamptz columns of every layer
_GEOMETRY_PROPERTIES = ("geometry", "geom")
_EXAMPLE_TIMESTAMP = "TIMESTAMP('2024-01-01T00:00:00Z')"

logging.getLogger("lark").setLevel(logging.WARNING)  # pygeofilter turns lark's debug log on

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
_ARITHMETIC = (ast.Add, ast.Sub, ast.Mul, ast.Div)
_KNOWN_FUNCTIONS = "CASEI, BBOX, TIMESTAMP, DATE and INTERVAL"
_SUPPORTED_TEMPORAL = "T_AFTER, T_BEFORE, T_EQUALS, T_DURING and T_INTERSECTS"
_ARRAY_FUNCTIONS = ("a_equals", "a_contains", "a_containedby", "a_overlaps")
_NEAR = "is not part of CQL2; use S_INTERSECTS with a polygon around the place"
# CQL2 (and CQL1) names we do not compile, refused by name wherever they stand: the text
# grammar cannot read most of them, which would otherwise answer with a syntax error.
_NOT_SUPPORTED = {
    **{name: f"{name.upper()} (array functions) is not supported" for name in _ARRAY_FUNCTIONS},
    "accenti": "ACCENTI (accent-insensitive comparison) is not supported",
    "s_dwithin": f"S_DWITHIN {_NEAR}",
    "s_beyond": f"S_BEYOND {_NEAR.replace('use', 'use NOT')}",
    "dwithin": f"DWITHIN (CQL1) {_NEAR}",
    "beyond": f"BEYOND (CQL1) {_NEAR.replace('use', 'use NOT')}",
}


@dataclass
class TimeIntersects(ast.Node):
    """T_INTERSECTS, which pygeofilter reads as T_OVERLAPS; an instant against an interval."""

    lhs: Any
    rhs: Any


def _refuse(message: str) -> NoReturn:
    raise InvalidInput(f"filter: {message}")


def _unsupported_in_text(text: str) -> str | None:
    """The refusal for the first unsupported function called in a CQL2 text, if any."""
    outside_quotes = re.sub(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?", "''", text)
    for name in re.findall(r"\b([A-Za-z_]+)\s*\(", outside_quotes):
        if name.lower() in _NOT_SUPPORTED:
            return _NOT_SUPPORTED[name.lower()]
    return None


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def _shown(value: Any) -> str:
    """A literal as the client wrote it, short."""
    if isinstance(value, str):
        text = "'" + value.replace("'", "''") + "'"
        return text if len(text) <= 42 else text[:40] + "…'"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime):
        return f"TIMESTAMP('{value.isoformat()}')"
    if isinstance(value, date):
        return f"DATE('{value.isoformat()}')"
    return str(value)[:40]


# -- reading literals (shared by the text and the JSON reader) ----------------------------------


def _integer(text: str) -> int:
    if len(text.lstrip("+-")) > _MAX_DIGITS:
        _refuse(f"the number {text[:20]}… has too many digits")
    return int(text)


def _float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        _refuse(f"the number {text[:40]} is too large (beyond ±1.8e308)")
    return number


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        _refuse(
            f"TIMESTAMP({_shown(text)}) is not a date-time (RFC 3339, e.g. {_EXAMPLE_TIMESTAMP})"
        )
    if value.tzinfo is None:
        _refuse(f"TIMESTAMP({_shown(text)}) needs a time zone: end it with Z or +08:00")
    return value


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        _refuse(f"DATE({_shown(text)}) is not a date (YYYY-MM-DD)")


def _interval_end(text: str, which: str) -> date | None:
    """An interval's start or end as CQL2 writes it: a date, a timestamp or '..' (open)."""
    if text == "..":
        return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    else:
        try:
            value = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            pass
        else:
            if value.tzinfo is None:
                _refuse(f"INTERVAL's {which} {_shown(text)} needs a time zone: end it with Z")
            return value
    _refuse(
        f"INTERVAL's {which} {_shown(text)} is not a date (2024-01-01), "
        "a date-time (2024-01-01T00:00:00Z) or '..'"
    )


def _day(day: date) -> tuple[datetime, datetime]:
    """A date as the instants its day starts and the next day starts, in UTC."""
    start = datetime.combine(day, time(), UTC)
    return start, start + timedelta(days=1)


# -- CQL2 text --------------------------------------------------------------------------------


@lark.v_args(inline=True)  # as pygeofilter's own; a subclass does not inherit it
class _TextTransformer(_pygeofilter_text.CQLTransformer):
    """pygeofilter's transformer, reading literals strictly and keeping CASEI as CASEI."""

    def INT(self, value: str) -> int:
        return _integer(value)

    def FLOAT(self, value: str) -> float:
        return _float(value)

    def wkt__SIGNED_NUMBER(self, value: str) -> float:
        return _float(value)

    def wkt__NUMBER(self, value: str) -> float:
        return _float(value)

    def SINGLE_QUOTED(self, token: str) -> str:
        return token[1:-1].replace("''", "'")

    def DOUBLE_QUOTED(self, token: str) -> str:
        return token[1:-1].replace('""', '"')

    def DATETIME(self, token: str) -> datetime:
        return _timestamp(str(token))

    def DATE(self, token: str) -> date:
        return _date(str(token))

    def interval(self, start: str, end: str) -> values.Interval:
        return values.Interval(_interval_end(start, "start"), _interval_end(end, "end"))

    def neg(self, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value
        _refuse("arithmetic (+, -, *, /) is not supported; compare a property with a value")

    def function(self, func_name: ast.Attribute, *expressions: Any) -> ast.Function:
        return ast.Function(func_name.name.lower(), list(expressions))

    def binary_temporal_predicate(self, lhs: Any, op: str, rhs: Any) -> ast.Node:
        if op.lower() == "t_intersects":
            return TimeIntersects(lhs, rhs)
        return super().binary_temporal_predicate(lhs, op, rhs)

    def bbox_spatial_predicate(self, *args: Any) -> NoReturn:
        _refuse(
            "BBOX(geometry, …) is CQL1; write S_INTERSECTS(geometry, BBOX(minx, miny, maxx, maxy))"
        )

    def relate_spatial_predicate(self, *args: Any) -> NoReturn:
        _refuse("RELATE is not supported; use S_INTERSECTS, S_WITHIN, S_CONTAINS …")

    def envelope(self, *args: Any) -> NoReturn:
        _refuse("ENVELOPE is not CQL2; write BBOX(minx, miny, maxx, maxy)")

    def wkt__geometry_with_srid(self, srid: int, geometry: dict[str, Any]) -> dict[str, Any]:
        geometry["crs"] = srid  # checked, with everything else, when the geometry is read
        return geometry

    def wkt__multipoint_2(self, *coordinates: Any) -> dict[str, Any]:
        return {"type": "MultiPoint", "coordinates": coordinates}  # without pygeofilter's print


def _text_parser() -> lark.Lark:
    grammar_file = Path(_pygeofilter_text.__file__).with_name("grammar.lark")
    grammar = grammar_file.read_text()
    # CQL2 writes a quote inside a string by doubling it ('O''Brien'); pygeofilter's lazy
    # pattern would end the string at the first quote.
    grammar = grammar.replace('SINGLE_QUOTED: "\'" /.*?/ "\'"', "SINGLE_QUOTED: /'(?:[^']|'')*'/")
    grammar = grammar.replace('DOUBLE_QUOTED: "\\"" /.*?/ "\\""', 'DOUBLE_QUOTED: /"(?:[^"]|"")*"/')
    # CQL2 interval ends are dates, timestamps or '..'; pygeofilter reads timestamps only.
    interval = '?interval: "INTERVAL" "("  "\'" DATETIME "\'" "," "\'" DATETIME "\'" ")"'
    assert interval in grammar  # pygeofilter's grammar changed under us
    grammar = grammar.replace(
        interval, 'interval: "INTERVAL" "(" SINGLE_QUOTED "," SINGLE_QUOTED ")"'
    )
    return lark.Lark(
        grammar,
        parser="lalr",  # no recursion while parsing: a long or deep filter cannot crash it
        source_path=str(grammar_file),
        maybe_placeholders=False,
        transformer=_TextTransformer(),
        import_paths=[os.path.dirname(grammar_file.parent)],
    )


_TEXT_PARSER = _text_parser()

# What the parser expected, in short words: lark names terminals (LPAR, __ANON_3, ...).
_WORD_GROUPS = [
    ({"attribute", "DOUBLE_QUOTED"}, "a property name"),
    ({"INT", "FLOAT", "SINGLE_QUOTED", "BOOLEAN", "TIMESTAMP", "DATE"}, "a value"),
    ({"=", "<>", "<", ">", "<=", ">=", "LIKE", "IN", "BETWEEN", "IS"},
     "a comparison (=, <>, <, >, <=, >=, LIKE, IN, BETWEEN, IS NULL)"),
    ({"AND", "OR"}, "AND or OR"),
    ({"S_INTERSECTS"}, "a spatial function (S_INTERSECTS …)"),
    ({"T_AFTER"}, "a temporal operator (T_AFTER …)"),
    ({"POINT", "POLYGON"}, "a geometry (POINT(…), POLYGON((…)) …)"),
    ({"NULL"}, "NULL"),
    ({"<date-time>"}, "a date-time such as 2024-01-01T00:00:00Z"),
    ({")"}, "')'"),
    ({"("}, "'('"),
    ({","}, "','"),
    ({"'"}, "a quote (')"),
    ({"$END"}, "the end of the filter"),
]  # fmt: skip


def _terminal_word(name: str) -> str:
    """A lark terminal as the text it stands for ('=', 'AND', 'attribute', 'INT' …)."""
    if name in ("INT", "FLOAT", "SINGLE_QUOTED", "DOUBLE_QUOTED", "BOOLEAN"):
        return name
    if name in ("DATETIME", "DATE"):
        return "<date-time>"
    if name.startswith("wkt__") and "NUMBER" in name:
        return "INT"
    terminal = next((t for t in _TEXT_PARSER.terminals if t.name == name), None)
    if terminal is None:
        return name
    if terminal.pattern.type == "str":
        return terminal.pattern.value.upper()
    return "attribute" if "a-zA-Z" in terminal.pattern.value else name


def _expected(names: set[str]) -> str:
    words = {_terminal_word(n) for n in names}
    said = [phrase for group, phrase in _WORD_GROUPS if words & group]
    return ", ".join(said[:5]) if said else "something else"


def _syntax_error(exc: lark.exceptions.UnexpectedInput, text: str) -> str:
    unsupported = _unsupported_in_text(text)
    if unsupported is not None:
        return f"filter: {unsupported}"
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        where = f"column {exc.column}"
        char = text[exc.pos_in_stream]
        got = "a text in quotes is not closed" if char == "'" else f"unexpected {char!r}"
        expected = set(exc.allowed or ())
    elif isinstance(exc, lark.exceptions.UnexpectedToken) and exc.token.type != "$END":
        where = f"column {exc.column}"
        token = str(exc.token)
        unclosed = token == "'"  # noqa: S105 (a quote, not a password)
        got = "a text in quotes is not closed" if unclosed else f"unexpected {token[:40]!r}"
        expected = set(exc.accepts or exc.expected or ())
    else:  # UnexpectedEOF, or a token at the end
        where = "the end"
        got = "the filter stops too early"
        expected = set(getattr(exc, "expected", ()) or ())
    if "\n" in text and getattr(exc, "line", -1) > 1:
        where = f"line {exc.line}, {where}"
    message = f"filter is not valid cql2-text: at {where}, {got}; expected {_expected(expected)}"
    if re.match(r"\s*T_[A-Za-z]+\s*\(", text):  # the function form pygeofilter cannot read
        message += (
            "; write temporal operators between their operands: updated_at T_AFTER TIMESTAMP('…')"
        )
    return message


def _parse_text(text: str) -> Any:
    try:
        return _TEXT_PARSER.parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        raise InvalidInput(_syntax_error(exc, text)) from None
    except lark.exceptions.VisitError as exc:  # a transformer callback refused a literal
        if isinstance(exc.orig_exc, InvalidInput):
            raise exc.orig_exc from None
        raise InvalidInput("filter is not valid cql2-text") from None


# -- CQL2 JSON --------------------------------------------------------------------------------


def _json_constant(name: str) -> NoReturn:
    _refuse(f"{name} is not a number; CQL2-JSON numbers are finite")


def _json_depth_ok(document: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH conditions before anything recurses through it."""
    stack = [(document, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > 2 * MAX_DEPTH:  # a condition is an object holding an args array
            _refuse(f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _parse_json(text: str) -> Any:
    try:
        document = json.loads(
            text, parse_int=_integer, parse_float=_float, parse_constant=_json_constant
        )
    except json.JSONDecodeError as exc:
        where = (
            f"line {exc.lineno}, column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
        )
        raise InvalidInput(f"filter is not valid cql2-json: {exc.msg.lower()} at {where}") from None
    except RecursionError:
        _refuse(f"nested more than {MAX_DEPTH} levels deep")
    _json_depth_ok(document)
    if not isinstance(document, dict | bool):
        _refuse(
            'a CQL2-JSON filter is an object such as {"op": "=", "args": [{"property": "name"}, "x"]}'
        )
    return _JsonReader().node(document, "")


def _path(where: str, step: str) -> str:
    return f"{where}.{step}" if where and not step.startswith("[") else where + step


def _fail(where: str, message: str) -> NoReturn:
    _refuse(f"{message} (at {where})" if where else message)


class _JsonReader:
    """CQL2-JSON (OGC 21-065) into pygeofilter's tree; ``where`` names the place in messages."""

    _ARITY: ClassVar[dict[str, int]] = {
        "not": 1,
        "isnull": 1,
        "like": 2,
        "in": 2,
        "between": 3,
        "casei": 1,
        "accenti": 1,
    }

    def node(self, value: Any, where: str) -> Any:
        if isinstance(value, bool | int | float | str):
            return value
        if value is None:
            _fail(where, "null is not a CQL2 value; test for a missing value with isNull")
        if isinstance(value, list):
            return [self.node(v, _path(where, f"[{i}]")) for i, v in enumerate(value)]
        if "op" in value:
            return self.operation(value, where)
        if "property" in value:
            if not isinstance(value["property"], str):
                _fail(where, "a property name is text")
            return ast.Attribute(value["property"])
        if "timestamp" in value:
            return _timestamp(self.text(value["timestamp"], where))
        if "date" in value:
            return _date(self.text(value["date"], where))
        if "interval" in value:
            ends = value["interval"]
            if not isinstance(ends, list) or len(ends) != 2:
                _fail(where, 'an interval is two instants, ["2024-01-01", ".."]')
            read = [
                _interval_end(e, w)
                if isinstance(e, str)
                else self.node(e, _path(where, "interval"))
                for e, w in zip(ends, ("start", "end"), strict=True)
            ]
            return values.Interval(*read)
        if "bbox" in value:
            if not isinstance(value["bbox"], list):
                _fail(where, "a bbox is a list of four numbers")
            return ast.Function("bbox", value["bbox"])
        if "type" in value and ("coordinates" in value or "geometries" in value):
            return values.Geometry(value)
        if "function" in value and isinstance(value["function"], dict):  # the draft's form
            function = value["function"]
            args = function.get("args", function.get("arguments", []))
            return self.operation({"op": function.get("name"), "args": args}, where)
        keys = ", ".join(list(map(str, value))[:5]) or "none"
        _fail(where, f"an object with keys {keys} is not a CQL2-JSON expression")

    @staticmethod
    def text(value: Any, where: str) -> str:
        if not isinstance(value, str):
            _fail(where, "a timestamp or date is written as text")
        return value

    def operation(self, value: dict[str, Any], where: str) -> Any:
        op = value["op"]
        if not isinstance(op, str):
            _fail(where, "op is the name of an operator, as text")
        name = op.lower()
        args = value.get("args")
        if isinstance(args, dict) and name in ("not", "isnull"):
            args = [args]  # the standard's examples write both
        if not isinstance(args, list):
            _fail(where, f"{op}: args must be a list")
        arity = self._ARITY.get(name)
        if name in ("between",) and len(args) == 2 and isinstance(args[1], list):
            args = [args[0], *args[1]]  # an earlier draft's form
        if name in _COMPARISON_OPS or name in SPATIAL_PREDICATES_MAP or name.startswith("t_"):
            arity = 2
        if name in ("+", "-", "*", "/", "div", "%", "^"):
            _refuse("arithmetic (+, -, *, /) is not supported; compare a property with a value")
        if name in _NOT_SUPPORTED:
            _fail(where, _NOT_SUPPORTED[name])
        if arity is not None and len(args) != arity:
            plural = "" if arity == 1 else "s"
            _fail(where, f"{op} takes {arity} argument{plural}, not {len(args)}")
        if name in ("and", "or") and len(args) < 2:
            _fail(where, f"{op} takes two or more arguments")
        items = [self.node(a, _path(where, f"args[{i}]")) for i, a in enumerate(args)]
        if name in ("and", "or"):
            return (ast.And if name == "and" else ast.Or).from_items(*items)
        if name == "not":
            return ast.Not(items[0])
        if name == "isnull":
            return ast.IsNull(items[0], False)
        if name == "like":
            return ast.Like(items[0], items[1], False, "%", "_", "\\", False)
        if name == "in":
            if not isinstance(items[1], list) or not items[1]:
                _fail(where, "the second argument of in is a list of one or more values")
            return ast.In(items[0], items[1], False)
        if name == "between":
            return ast.Between(items[0], items[1], items[2], False)
        if name in _COMPARISON_OPS:
            return _COMPARISON_OPS[name](*items)
        if name in SPATIAL_PREDICATES_MAP:
            return SPATIAL_PREDICATES_MAP[name](*items)
        if name == "t_intersects":
            return TimeIntersects(*items)
        if name in TEMPORAL_PREDICATES_MAP:
            return TEMPORAL_PREDICATES_MAP[name](*items)
        return ast.Function(name, items)  # a function call; the compiler knows which exist


_COMPARISON_OPS = {"=": ast.Equal, "<>": ast.NotEqual, "<": ast.LessThan, "<=": ast.LessEqual,
                   ">": ast.GreaterThan, ">=": ast.GreaterEqual}  # fmt: skip


# -- parsing, the public door -----------------------------------------------------------------


def parse(text: str, lang: str = "cql2-text") -> Any:
    """The filter's syntax tree; InvalidInput naming the problem when it does not parse."""
    if lang == "cql-text":  # the draft's name, which GDAL 3.6 sends; its filters are CQL2 text
        lang = "cql2-text"
    if lang not in LANGS:
        raise InvalidInput(f"filter-lang {lang[:40]!r}: use cql2-text or cql2-json")
    if not text.strip():
        _refuse("it is empty; leave filter out to select everything")
    try:
        return _parse_json(text) if lang == "cql2-json" else _parse_text(text)
    except RecursionError:
        _refuse(f"nested more than {MAX_DEPTH} levels deep")


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
        return _Compiler(column, geometry, srid, types or {}).condition(node)
    except RecursionError:
        _refuse(f"nested more than {MAX_DEPTH} levels deep")


# -- the compiler -----------------------------------------------------------------------------


@dataclass
class _Operand:
    """A value in the filter: its SQL, its type family and how to name it in a message."""

    sql: sql.Composable
    family: str  # number, string, boolean, time, geometry, object
    label: str
    kind: str  # the type as the client knows it (integer, number, string, timestamp …)
    is_property: bool = False


class _Compiler:
    def __init__(
        self, column: Column, geometry: sql.Composable, srid: int, types: dict[str, str]
    ) -> None:
        self.column = column
        self.geometry = geometry
        self.srid = srid
        self.types = types
        self.depth = 0

    # conditions

    def condition(self, node: Any) -> sql.Composable:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                _refuse(f"nested more than {MAX_DEPTH} levels deep")
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
                _refuse(
                    f"BETWEEN takes numbers, text or times; {lhs.label} is {_article(lhs.kind)} {lhs.kind}"
                )
            return sql.SQL("({} {}BETWEEN {} AND {})").format(
                lhs.sql, sql.SQL("NOT " if node.not_ else ""), low.sql, high.sql
            )
        if isinstance(node, ast.IsNull):
            if isinstance(node.lhs, ast.Attribute) and node.lhs.name in _GEOMETRY_PROPERTIES:
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
            _refuse(f"{name} is not supported; use {_SUPPORTED_TEMPORAL}")
        if isinstance(node, ast.Include):
            return sql.SQL("FALSE" if node.not_ else "TRUE")
        if isinstance(node, bool):
            return sql.SQL("TRUE" if node else "FALSE")
        if isinstance(node, ast.Attribute):
            value = self.operand(node)
            if value.family == "boolean":
                return sql.SQL("({} IS TRUE)").format(value.sql)
            _refuse(f"{value.label} is {_article(value.kind)} {value.kind}, not a condition")
        if isinstance(node, ast.Predicate):
            _refuse(f"{type(node).__name__} is not supported")
        _refuse(
            f"{self.operand(node).label} is a value, not a condition; compare it with something"
        )

    def like(self, node: ast.Like) -> sql.Composable:
        lhs = self.operand(node.lhs)
        if lhs.family != "string":
            _refuse(f"LIKE compares text; {lhs.label} is {_article(lhs.kind)} {lhs.kind}")
        pattern = self.operand(node.pattern)
        if (
            pattern.family != "string"
            or pattern.is_property
            or not isinstance(_unwrapped(node.pattern), str)
        ):
            _refuse("the pattern after LIKE is text in quotes, such as '%路%'")
        text = _unwrapped(node.pattern)
        if (len(text) - len(text.rstrip("\\"))) % 2:
            _refuse("a LIKE pattern cannot end with a backslash (it escapes the next character)")
        return sql.SQL("({} {}{} {})").format(
            lhs.sql, sql.SQL("NOT " if node.not_ else ""),
            sql.SQL("ILIKE" if node.nocase else "LIKE"), pattern.sql,
        )  # fmt: skip

    def temporal(self, node: Any) -> sql.Composable:
        name = "T_INTERSECTS" if isinstance(node, TimeIntersects) else _TEMPORAL_NAMES[type(node)]
        lhs = self.operand(node.lhs)
        if lhs.family != "time":
            _refuse(f"{name} compares times; {lhs.label} is {_article(lhs.kind)} {lhs.kind}")
        if not _is_interval(node.rhs) and not isinstance(node, ast.TimeDuring):
            return self.against_instant(node, lhs)
        if type(node) in _INSTANT_OPERATORS:
            _refuse(f"{name} takes an instant; for an interval use T_DURING or T_INTERSECTS")
        start, end = self.interval(node.rhs, name)
        # T_DURING: strictly inside; T_INTERSECTS: inside or on an end. A date bound is its
        # whole day: the start bound from 00:00 UTC, the end bound up to the next day's 00:00.
        low = ">" if isinstance(node, ast.TimeDuring) else ">="
        parts = [sql.SQL("{} IS NOT NULL").format(lhs.sql)]
        if start is not None:
            first = start if isinstance(start, datetime) else _day(start)[0]
            parts.append(sql.SQL("{} {} {}").format(lhs.sql, sql.SQL(low), sql.Literal(first)))
        if isinstance(end, datetime):
            high = "<" if isinstance(node, ast.TimeDuring) else "<="
            parts.append(sql.SQL("{} {} {}").format(lhs.sql, sql.SQL(high), sql.Literal(end)))
        elif end is not None:
            parts.append(sql.SQL("{} < {}").format(lhs.sql, sql.Literal(_day(end)[1])))
        return sql.SQL("({})").format(sql.SQL(" AND ").join(parts))

    def against_instant(self, node: Any, lhs: _Operand) -> sql.Composable:
        """T_AFTER, T_BEFORE, T_EQUALS or T_INTERSECTS an instant; a date is its whole day."""
        day = _instant_literal(node.rhs)
        if day is None or isinstance(day, datetime):
            rhs = self.operand(node.rhs)
            self.comparable(lhs, rhs)
            operator = sql.SQL(_INSTANT_OPERATORS.get(type(node), "="))
            return sql.SQL("({} {} {})").format(lhs.sql, operator, rhs.sql)
        start, next_day = (sql.Literal(t) for t in _day(day))
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
            _refuse(f"{name} takes an interval, INTERVAL('2024-01-01', '..')")
        read: list[date | None] = []
        for end, which in zip(ends, ("start", "end"), strict=True):
            if isinstance(end, str):
                end = _interval_end(end, which)
            elif isinstance(end, ast.Function):
                end = _instant_literal(end)
                if end is None:
                    _refuse(f"{name}: an interval's ends are dates, timestamps or '..'")
            if end is not None and not isinstance(end, date):
                _refuse(f"{name}: an interval's ends are dates, timestamps or '..'")
            read.append(end)
        return read[0], read[1]

    # values

    def operand(self, node: Any) -> _Operand:
        if isinstance(node, ast.Attribute):
            return self.property(node.name)
        if isinstance(node, bool):
            return _Operand(sql.Literal(node), "boolean", _shown(node), "boolean")
        if isinstance(node, int):
            if not -_INT64 <= node < _INT64:
                _refuse(f"the number {_shown(node)[:20]}… is beyond a 64-bit integer")
            return _Operand(sql.Literal(node), "number", _shown(node), "number")
        if isinstance(node, float):
            if not math.isfinite(node):
                _refuse(f"the number {node} is not finite")
            return _Operand(sql.Literal(node), "number", _shown(node), "number")
        if isinstance(node, str):
            _check_text(node)
            return _Operand(sql.Literal(node), "string", _shown(node), "string")
        if isinstance(node, datetime):
            if node.tzinfo is None:
                _refuse(f"{_shown(node)} needs a time zone: end it with Z or +08:00")
            return _Operand(sql.Literal(node), "time", _shown(node), "timestamp")
        if isinstance(node, date):
            return _Operand(sql.Literal(node), "time", _shown(node), "date")
        if isinstance(node, ast.Function):
            return self.function(node)
        if isinstance(node, values.Geometry):
            return _Operand(self.geometry_literal(node), "geometry", "a geometry", "geometry")
        if isinstance(node, _ARITHMETIC):
            _refuse("arithmetic (+, -, *, /) is not supported; compare a property with a value")
        if _is_interval(node):
            _refuse("an interval can only follow T_DURING or T_INTERSECTS")
        if isinstance(node, list):
            _refuse("a list of values belongs after IN")
        if isinstance(node, ast.Node):
            _refuse("a condition stands where a value is expected")
        _refuse(f"{type(node).__name__} cannot be used here")

    def property(self, name: str) -> _Operand:
        if name in _GEOMETRY_PROPERTIES:
            return _Operand(self.geometry, "geometry", name, "geometry", True)
        if len(name) > 63:  # PostgreSQL's longest name; no queryable is longer
            _refuse(f"{name[:40]}… is not a queryable (names are at most 63 characters)")
        if name.upper() == "NULL":  # the grammar reads a bare NULL as a property name
            _refuse("NULL is not a value in CQL2; test for a missing value with IS NULL")
        column = self.column(name)  # refuses names that are not queryables
        kind = self.types.get(name, "string")
        if name in _TIME_PROPERTIES:
            kind = "timestamp"
        family = {"integer": "number", "number": "number", "boolean": "boolean",
                  "timestamp": "time", "object": "object"}.get(kind, "string")  # fmt: skip
        return _Operand(column, family, name, kind, True)

    def function(self, node: ast.Function) -> _Operand:
        name, args = node.name.lower(), node.arguments
        if name == "casei":
            if len(args) != 1:
                _refuse(f"CASEI takes one argument, not {len(args)}")
            inner = self.operand(args[0])
            if inner.family != "string":
                _refuse(f"CASEI takes text; {inner.label} is {_article(inner.kind)} {inner.kind}")
            return _Operand(
                sql.SQL("lower({})").format(inner.sql), "string", f"CASEI({inner.label})",
                "string", inner.is_property,
            )  # fmt: skip
        if name in _NOT_SUPPORTED:
            _refuse(_NOT_SUPPORTED[name])
        if name == "bbox":
            return _Operand(self.bbox(args), "geometry", "BBOX(…)", "geometry")
        if name in ("timestamp", "date") and len(args) == 1 and isinstance(args[0], str):
            value = _timestamp(args[0]) if name == "timestamp" else _date(args[0])
            return self.operand(value)
        if name == "interval":
            _refuse("an interval can only follow T_DURING or T_INTERSECTS")
        shown = name if len(name) <= 40 else name[:40] + "…"
        _refuse(
            f"{shown}() is not a function or operator here; the functions are {_KNOWN_FUNCTIONS}"
        )

    def comparable(self, a: _Operand, b: _Operand) -> None:
        """Refuse comparing values of different types; the message names both."""
        for side in (a, b):
            if side.family == "geometry":
                _refuse(f"{side.label} is a geometry; compare it with S_INTERSECTS, S_WITHIN …")
            if side.family == "object":
                _refuse(f"{side.label} holds several values and cannot be compared")
        if a.family == b.family:
            return
        prop, other = (a, b) if a.is_property or not b.is_property else (b, a)
        if prop.is_property and other.is_property:
            _refuse(
                f"{a.label} is {_article(a.kind)} {a.kind} and {b.label} is "
                f"{_article(b.kind)} {b.kind}; they cannot be compared"
            )
        if prop.is_property and prop.family == "time" and other.family == "string":
            _refuse(
                f"{prop.label} is a timestamp; compare it with {_EXAMPLE_TIMESTAMP}, not {other.label}"
            )
        if prop.is_property:
            _refuse(f"{prop.label} is {_article(prop.kind)} {prop.kind}; {other.label} is not")
        _refuse(f"{a.label} ({a.kind}) and {b.label} ({b.kind}) cannot be compared")

    # geometries

    def spatial(self, node: Any, name: str) -> sql.Composable:
        if isinstance(node, ast.Attribute):
            value = self.property(node.name)
            if value.family != "geometry":
                _refuse(
                    f"{name} takes geometries; {value.label} is {_article(value.kind)} "
                    f"{value.kind} (the geometry property is called geometry)"
                )
            return value.sql
        value = self.operand(node)
        if value.family != "geometry":
            _refuse(f"{name} takes geometries; {value.label} is not one")
        return value.sql

    def geometry_literal(self, node: values.Geometry) -> sql.Composable:
        shape = node.geometry
        kind = str(shape.get("type", "geometry"))[:30]
        crs = shape.get("crs")
        if crs is not None and crs not in (4326, "4326"):
            _refuse(
                f"the {kind} is read in longitude/latitude (CRS84); SRID={str(crs)[:12]} is not"
            )
        for number, position in enumerate(_positions(shape), 1):
            _check_position(position, f"the {kind}'s position {number}")
        _check_parts(shape)
        try:
            geom = shapely.geometry.shape({k: v for k, v in shape.items() if k != "crs"})
        except Exception:  # shapely's and GEOS's words are not the client's
            _refuse(f"the geometry ({kind}) cannot be read: its coordinates are not a {kind}'s")
        if geom.is_empty:
            _refuse(f"the geometry ({kind}) is empty")
        if not shapely.is_valid(geom):
            polygonal = geom.geom_type in ("Polygon", "MultiPolygon", "GeometryCollection")
            reason = invalid_reason(geom) if polygonal else "a line's positions are all one point"
            _refuse(f"the geometry ({kind}) is not valid: {reason}")
        return sql.SQL("ST_Transform(ST_GeomFromText({}, 4326), {})").format(
            sql.Literal(geom.wkt), sql.Literal(self.srid)
        )

    def bbox(self, args: list[Any]) -> sql.Composable:
        if len(args) not in (4, 6) or not all(_is_number(a) for a in args):
            _refuse("BBOX takes four numbers: minx, miny, maxx, maxy (longitudes, latitudes)")
        if len(args) == 6:  # minx, miny, minz, maxx, maxy, maxz
            args = [args[0], args[1], args[3], args[4]]
        west, south, east, north = (float(a) for a in args)
        _check_position([west, south], "BBOX's south-west corner")
        _check_position([east, north], "BBOX's north-east corner")
        if south > north:
            _refuse(f"BBOX's southern edge {south:g} is north of its northern edge {north:g}")
        box = "ST_MakeEnvelope({}, {}, {}, {}, 4326)"
        if west <= east:
            envelope = sql.SQL(box).format(*map(sql.Literal, (west, south, east, north)))
        else:  # across the antimeridian: the two sides of 180°
            envelope = sql.SQL(f"ST_Collect({box}, {box})").format(
                *map(sql.Literal, (west, south, 180.0, north, -180.0, south, east, north))
            )
        return sql.SQL("ST_Transform({}, {})").format(envelope, sql.Literal(self.srid))


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


def _instant_literal(node: Any) -> date | None:
    """The date or timestamp (a datetime) a literal stands for, DATE('…') or TIMESTAMP('…')
    read as functions too; None for anything else."""
    if (
        isinstance(node, ast.Function)
        and node.name in ("date", "timestamp")
        and len(node.arguments) == 1
        and isinstance(node.arguments[0], str)
    ):
        text = node.arguments[0]
        return _date(text) if node.name == "date" else _timestamp(text)
    return node if isinstance(node, date) else None


def _is_interval(node: Any) -> bool:
    return isinstance(node, values.Interval) or (
        isinstance(node, ast.Function) and node.name == "interval"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_text(value: str) -> None:
    """Text PostgreSQL can store: no NUL, nothing UTF-8 cannot encode."""
    if "\x00" in value:
        shown = _shown(value).replace("\x00", "\\0")
        _refuse(f"text cannot hold a NUL character (%00): {shown}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _refuse("text holds a character that is not Unicode (an unpaired surrogate)")


def _positions(shape: dict[str, Any]) -> Iterator[Any]:
    """Every position of a GeoJSON-like geometry, without recursion."""
    stack: list[Any] = [shape]
    found: list[Any] = []
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("type") == "GeometryCollection":
                stack.extend(reversed(list(item.get("geometries") or [])))
            else:
                stack.append(item.get("coordinates"))
        elif isinstance(item, list | tuple) and item and not isinstance(item[0], list | tuple):
            found.append(item)
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))
        else:
            _refuse("a geometry's coordinates are lists of numbers")
    return iter(found)


_GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                   "MultiPolygon", "GeometryCollection")  # fmt: skip


def _check_parts(shape: dict[str, Any]) -> None:
    """Refuse, in words, what shapely would refuse in its own (or close silently): a line of
    one position, a ring of fewer than four or one that does not end where it starts."""
    stack: list[tuple[dict[str, Any], str]] = [(shape, "")]
    while stack:
        item, member = stack.pop()
        kind = item.get("type")
        if kind not in _GEOMETRY_TYPES:
            _refuse(f"{_shown(str(kind))} is not a geometry type ({', '.join(_GEOMETRY_TYPES)})")
        if kind == "GeometryCollection":
            members = list(item.get("geometries") or [])
            if not all(isinstance(m, dict) for m in members):
                _refuse("a GeometryCollection's geometries are geometries")
            stack.extend((m, f"member {i} of the collection: ") for i, m in enumerate(members))
            continue
        coordinates = item.get("coordinates")
        if kind in ("LineString", "Polygon"):
            coordinates = [coordinates]
        elif kind not in ("MultiLineString", "MultiPolygon"):
            continue
        said = f"{member}the geometry ({kind}):"  # as the other geometry refusals begin
        nesting = f"{said} its coordinates are not nested as a {kind}'s are"
        if not _is_list(coordinates):
            _refuse(nesting)
        for p, part in enumerate(coordinates):
            of_part = f" of part {p}" if kind.startswith("Multi") else ""
            lines = [part] if "LineString" in kind else part
            if not _is_list(lines) or not all(_is_list(x) and all(map(_is_list, x)) for x in lines):
                _refuse(nesting)
            if "LineString" in kind:
                if len(part) < 2:
                    _refuse(f"{said} the line{of_part} needs two positions or more")
                continue
            for r, ring in enumerate(part):
                if len(ring) < 4 or list(ring[0]) != list(ring[-1]):
                    which = "the outer ring" if r == 0 else f"ring {r} (a hole)"
                    _refuse(
                        f"{said} {which}{of_part} is not closed: a ring has four "
                        "positions or more and ends where it starts"
                    )


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _check_position(position: Any, where: str) -> None:
    if not all(_is_number(v) for v in position) or not 2 <= len(position) <= 3:
        _refuse(f"{where} is not a position of two or three numbers")
    if not all(math.isfinite(v) for v in position[2:]):
        _refuse(f"{where}: height {position[2]} is not a finite number")
    fault = coordinate_fault(position[0], position[1])  # longitude/latitude, as every door's
    if fault is not None:
        _refuse(f"{where}: {fault}")
