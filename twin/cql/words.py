"""The words every part of the CQL2 compiler refuses with, and the names shared across it.

Every refusal starts "filter: " and speaks in the client's terms; CQL2 (and CQL1) names we
do not compile are refused by name wherever they stand, in the text or the JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NoReturn

from pygeofilter import ast

from twin.errors import InvalidInput

MAX_DEPTH = 100  # levels of nested conditions; far beyond any hand-written filter
EXAMPLE_TIMESTAMP = "TIMESTAMP('2024-01-01T00:00:00Z')"
_ARRAY_FUNCTIONS = ("a_equals", "a_contains", "a_containedby", "a_overlaps")
_NEAR = "is not part of CQL2; use S_INTERSECTS with a polygon around the place"
# CQL2 (and CQL1) names we do not compile, refused by name wherever they stand: the text
# grammar cannot read most of them, which would otherwise answer with a syntax error.
NOT_SUPPORTED = {
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


def refuse(message: str) -> NoReturn:
    """Refuse the filter: InvalidInput saying what is wrong, in the client's words."""
    raise InvalidInput(f"filter: {message}")


def article(kind: str) -> str:
    """'a' or 'an', for a type's name in a message."""
    return "an" if kind[0] in "aeiou" else "a"


def as_written(value: Any) -> str:
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
