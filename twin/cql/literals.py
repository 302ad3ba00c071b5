"""Reading CQL2 literals strictly (numbers, timestamps, dates, intervals), shared by the text
and the JSON reader and by the compiler: each refuses what it cannot read, in words.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pygeofilter import ast, values

from twin.cql.words import EXAMPLE_TIMESTAMP, as_written, refuse

_MAX_DIGITS = 25  # longer integers are refused before Python is asked to read them


def integer_literal(text: str) -> int:
    """An integer; one of too many digits is refused before Python is asked to read it."""
    if len(text.lstrip("+-")) > _MAX_DIGITS:
        refuse(f"the number {text[:20]}… has too many digits")
    return int(text)


def float_literal(text: str) -> float:
    """A finite number, refused beyond a double's range."""
    number = float(text)
    if not math.isfinite(number):
        refuse(f"the number {text[:40]} is too large (beyond ±1.8e308)")
    return number


def timestamp_literal(text: str) -> datetime:
    """A TIMESTAMP's date-time, RFC 3339 with its time zone."""
    try:
        value = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        refuse(
            f"TIMESTAMP({as_written(text)}) is not a date-time (RFC 3339, e.g. {EXAMPLE_TIMESTAMP})"
        )
    if value.tzinfo is None:
        refuse(f"TIMESTAMP({as_written(text)}) needs a time zone: end it with Z or +08:00")
    return value


def date_literal(text: str) -> date:
    """A DATE's day, YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        refuse(f"DATE({as_written(text)}) is not a date (YYYY-MM-DD)")


def interval_end(text: str, which: str) -> date | None:
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
                refuse(f"INTERVAL's {which} {as_written(text)} needs a time zone: end it with Z")
            return value
    refuse(
        f"INTERVAL's {which} {as_written(text)} is not a date (2024-01-01), "
        "a date-time (2024-01-01T00:00:00Z) or '..'"
    )


def day_span(day: date) -> tuple[datetime, datetime]:
    """A date as the instants its day starts and the next day starts, in UTC."""
    start = datetime.combine(day, time(), UTC)
    return start, start + timedelta(days=1)


def instant_literal(node: Any) -> date | None:
    """The date or timestamp (a datetime) a literal stands for, DATE('…') or TIMESTAMP('…')
    read as functions too; None for anything else."""
    if (
        isinstance(node, ast.Function)
        and node.name in ("date", "timestamp")
        and len(node.arguments) == 1
        and isinstance(node.arguments[0], str)
    ):
        text = node.arguments[0]
        return date_literal(text) if node.name == "date" else timestamp_literal(text)
    return node if isinstance(node, date) else None


def is_interval(node: Any) -> bool:
    """Whether a node is an interval: read as one, or an INTERVAL(…) call not read yet."""
    return isinstance(node, values.Interval) or (
        isinstance(node, ast.Function) and node.name == "interval"
    )
