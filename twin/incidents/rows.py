"""What the category and responsibility tables take from a person or a file: each value
read from text (a CSV cell) or a JSON value, and each row that cannot be used rejected with
the row and column named, the rest kept."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from twin.errors import InvalidInput

MAX_TEXT = 500  # a code, a name, a note: longer is a mistake (a file read the wrong way)
CODE = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")  # a code: no control characters, 1-100 long
BLANK = frozenset({"", "-", "--", "n/a", "na", "null", "none", "无", "/"})


class RowError(ValueError):
    """Why a value of a row cannot be used, and its column."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


@dataclass(frozen=True)
class Rejected:
    """A row that was not stored: its number (1 the first), its key as given, the column
    at fault (None: the row as a whole) and why."""

    row: int
    key: str
    column: str | None
    reason: str

    def message(self) -> str:
        """The rejection as one line for a person."""
        return f"row {self.row} ({self.key}): {self.reason}"


@dataclass
class Stored:
    """What a write of rows did: how many inserted and updated, and the rows rejected."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def raise_first(self) -> None:
        """InvalidInput for the first rejection, naming its column (for a single row
        written through the API, where a rejection is the answer)."""
        if self.rejected:
            first = self.rejected[0]
            raise InvalidInput(first.reason, option=first.column)


def blank(value: Any) -> bool:
    """Whether a value says nothing (None, empty, a placeholder such as 无 or N/A)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return False  # NaN given as a number is a wrong number, not a blank
    return isinstance(value, str) and value.strip().lower() in BLANK


def text(column: str, value: Any, *, required: bool = False, code: bool = False) -> str | None:
    """A text value, trimmed; None when blank (RowError when ``required``)."""
    if blank(value):
        if required:
            raise RowError(column, f"no {column} (it is required)")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RowError(column, f"{column} must be text, not {_kind(value)}")
    value = str(value).strip()
    if "\x00" in value:
        raise RowError(column, f"{column} holds a NUL character (\\0), which cannot be stored")
    if code and not CODE.match(value):
        raise RowError(
            column, f"{column} {value[:60]!r} must be 1-100 characters with no control characters"
        )
    if len(value) > MAX_TEXT:
        raise RowError(column, f"{column} is longer than {MAX_TEXT} characters")
    if not code and re.search(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]", value):
        raise RowError(column, f"{column} holds a control character, which a name may not hold")
    return value


def positive(column: str, value: Any, *, default: float | None = None, most: float = 1e9) -> float:
    """A positive, finite number (from a number or its text) up to ``most``; ``default``
    where blank."""
    if blank(value):
        if default is None:
            raise RowError(column, f"no {column} (it is required: a number above 0)")
        return default
    number = _number(column, value)
    if not math.isfinite(number) or number <= 0:
        raise RowError(column, f"{column} must be a finite number above 0, not {_shown(value)}")
    if number > most:
        raise RowError(column, f"{column} {_shown(value)} is too large (at most {most:,.0f})")
    return number


def whole(column: str, value: Any, *, low: int, high: int, default: int) -> int:
    """A whole number from ``low`` to ``high`` (from a number or its text)."""
    if blank(value):
        return default
    number = _number(column, value)
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise RowError(column, f"{column} must be a whole number from {low} to {high}, not "
                       f"{_shown(value)}")  # fmt: skip
    return int(number)


def _number(column: str, value: Any) -> float:
    if isinstance(value, bool):
        raise RowError(column, f"{column} must be a number, not true/false")
    if isinstance(value, int):
        return float(value) if abs(value) < 2**63 else math.inf  # past 64 bits: no SLA
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        cleaned = value.strip().replace(",", "")
        if "\x00" in cleaned or "_" in cleaned:  # Python reads "1_0" as 10: not what was meant
            raise RowError(column, f"{column} {_shown(value)} is not a number")
        try:
            return float(cleaned)
        except ValueError:
            raise RowError(column, f"{column} {_shown(value)} is not a number") from None
    raise RowError(column, f"{column} must be a number, not {_kind(value)}")


def _shown(value: Any) -> str:
    return repr(str(value).replace("\x00", "")[:40])


def _kind(value: Any) -> str:
    kinds = ((bool, "true/false"), (int, "a number"), (float, "a number"), (str, "text"),
             (list, "a list"), (dict, "an object"))  # fmt: skip
    return next((name for kind, name in kinds if isinstance(value, kind)), "null")


def key_of(row: Any, column: str) -> str:
    """A row's key as a person recognises it in messages (its code, or a placeholder)."""
    value = row.get(column) if isinstance(row, dict) else None
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
        return f"{column} {str(value).strip().replace(chr(0), '')[:60]!r}"
    return f"no {column}"


def refuse_unknown_columns(row: Any, columns: tuple[str, ...], what: str) -> None:
    """RowError for a row that is no object, or one with a column the table does not take."""
    if not isinstance(row, dict):
        raise RowError("row", f"{what} must be an object of {', '.join(columns)}, not {_kind(row)}")
    unknown = [str(k)[:40] for k in row if k not in columns]
    if unknown:
        raise RowError(
            unknown[0],
            f"unknown column {', '.join(repr(k) for k in unknown[:5])}; {what} takes "
            + ", ".join(columns),
        )
