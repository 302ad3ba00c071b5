"""CQL2-JSON (OGC 21-065) read into pygeofilter's syntax tree: it is JSON already, and
pygeofilter 0.4 misreads parts of it (``between``, ``casei``). Messages name the place.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, NoReturn

from pygeofilter import ast, values
from pygeofilter.cql2 import SPATIAL_PREDICATES_MAP, TEMPORAL_PREDICATES_MAP

from twin.cql.literals import (
    date_literal,
    float_literal,
    integer_literal,
    interval_end,
    timestamp_literal,
)
from twin.cql.words import MAX_DEPTH, NOT_SUPPORTED, TimeIntersects, refuse
from twin.errors import InvalidInput


def _json_constant(name: str) -> NoReturn:
    refuse(f"{name} is not a number; CQL2-JSON numbers are finite")


def _json_depth_ok(document: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH conditions before anything recurses through it."""
    stack = [(document, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > 2 * MAX_DEPTH:  # a condition is an object holding an args array
            refuse(f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def parse_json(text: str) -> Any:
    """A CQL2-JSON filter's syntax tree; InvalidInput naming where it is wrong."""
    try:
        document = json.loads(
            text,
            parse_int=integer_literal,
            parse_float=float_literal,
            parse_constant=_json_constant,
        )
    except json.JSONDecodeError as exc:
        where = (
            f"line {exc.lineno}, column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
        )
        raise InvalidInput(f"filter is not valid cql2-json: {exc.msg.lower()} at {where}") from None
    except RecursionError:
        refuse(f"nested more than {MAX_DEPTH} levels deep")
    _json_depth_ok(document)
    if not isinstance(document, dict | bool):
        refuse(
            'a CQL2-JSON filter is an object such as {"op": "=", "args": [{"property": "name"}, "x"]}'
        )
    return _JsonReader().node(document, "")


def _path(where: str, step: str) -> str:
    return f"{where}.{step}" if where and not step.startswith("[") else where + step


def _fail(where: str, message: str) -> NoReturn:
    refuse(f"{message} (at {where})" if where else message)


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
            return timestamp_literal(self.text(value["timestamp"], where))
        if "date" in value:
            return date_literal(self.text(value["date"], where))
        if "interval" in value:
            ends = value["interval"]
            if not isinstance(ends, list) or len(ends) != 2:
                _fail(where, 'an interval is two instants, ["2024-01-01", ".."]')
            read = [
                interval_end(e, w) if isinstance(e, str) else self.node(e, _path(where, "interval"))
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
            refuse("arithmetic (+, -, *, /) is not supported; compare a property with a value")
        if name in NOT_SUPPORTED:
            _fail(where, NOT_SUPPORTED[name])
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
