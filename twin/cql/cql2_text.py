"""CQL2 text read with pygeofilter's grammar (strings, intervals fixed) by our transformer,
which checks literals as it reads them; a syntax error answered in words, not lark's.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

import lark
from pygeofilter import ast, values
from pygeofilter.parsers.cql2_text import parser as _pygeofilter_text

from twin.cql.literals import (
    date_literal,
    float_literal,
    integer_literal,
    interval_end,
    timestamp_literal,
)
from twin.cql.words import NOT_SUPPORTED, TimeIntersects, refuse
from twin.errors import InvalidInput

logging.getLogger("lark").setLevel(logging.WARNING)  # pygeofilter turns lark's debug log on


def _unsupported_in_text(text: str) -> str | None:
    """The refusal for the first unsupported function called in a CQL2 text, if any."""
    outside_quotes = re.sub(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?", "''", text)
    for name in re.findall(r"\b([A-Za-z_]+)\s*\(", outside_quotes):
        if name.lower() in NOT_SUPPORTED:
            return NOT_SUPPORTED[name.lower()]
    return None


@lark.v_args(inline=True)  # as pygeofilter's own; a subclass does not inherit it
class _TextTransformer(_pygeofilter_text.CQLTransformer):
    """pygeofilter's transformer, reading literals strictly and keeping CASEI as CASEI."""

    def INT(self, value: str) -> int:
        return integer_literal(value)

    def FLOAT(self, value: str) -> float:
        return float_literal(value)

    def wkt__SIGNED_NUMBER(self, value: str) -> float:
        return float_literal(value)

    def wkt__NUMBER(self, value: str) -> float:
        return float_literal(value)

    def SINGLE_QUOTED(self, token: str) -> str:
        return token[1:-1].replace("''", "'")

    def DOUBLE_QUOTED(self, token: str) -> str:
        return token[1:-1].replace('""', '"')

    def DATETIME(self, token: str) -> datetime:
        return timestamp_literal(str(token))

    def DATE(self, token: str) -> date:
        return date_literal(str(token))

    def interval(self, start: str, end: str) -> values.Interval:
        return values.Interval(interval_end(start, "start"), interval_end(end, "end"))

    def neg(self, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value
        refuse("arithmetic (+, -, *, /) is not supported; compare a property with a value")

    def function(self, func_name: ast.Attribute, *expressions: Any) -> ast.Function:
        return ast.Function(func_name.name.lower(), list(expressions))

    def binary_temporal_predicate(self, lhs: Any, op: str, rhs: Any) -> ast.Node:
        if op.lower() == "t_intersects":
            return TimeIntersects(lhs, rhs)
        return super().binary_temporal_predicate(lhs, op, rhs)

    def bbox_spatial_predicate(self, *args: Any) -> NoReturn:
        refuse(
            "BBOX(geometry, …) is CQL1; write S_INTERSECTS(geometry, BBOX(minx, miny, maxx, maxy))"
        )

    def relate_spatial_predicate(self, *args: Any) -> NoReturn:
        refuse("RELATE is not supported; use S_INTERSECTS, S_WITHIN, S_CONTAINS …")

    def envelope(self, *args: Any) -> NoReturn:
        refuse("ENVELOPE is not CQL2; write BBOX(minx, miny, maxx, maxy)")

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


def parse_text(text: str) -> Any:
    """A CQL2 text filter's syntax tree; InvalidInput saying where it is wrong, in words."""
    try:
        return _TEXT_PARSER.parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        raise InvalidInput(_syntax_error(exc, text)) from None
    except lark.exceptions.VisitError as exc:  # a transformer callback refused a literal
        if isinstance(exc.orig_exc, InvalidInput):
            raise exc.orig_exc from None
        raise InvalidInput("filter is not valid cql2-text") from None
