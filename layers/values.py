"""Values as they come in real data: "12.13 m", "12,5", "3 floors", "DN300", "300mm", "3层".

Each parser returns the value in the schema's unit, or raises ``ValueError`` with a short
reason; the importer then keeps the raw value in the feature's properties and reports it.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from typing import Any

from twin.errors import InvalidInput

_NUMBER = re.compile(r"[-+]?(?:\d+(?:[.,]\d+)*|[.,]\d+)(?:[eE][-+]?\d+)?")
# Metres per unit, for lengths written with a unit.
_LENGTH_UNITS = {
    "mm": 0.001, "毫米": 0.001,
    "cm": 0.01, "厘米": 0.01,
    "dm": 0.1,
    "m": 1.0, "米": 1.0, "metre": 1.0, "metres": 1.0, "meter": 1.0, "meters": 1.0,
    "km": 1000.0, "公里": 1000.0, "千米": 1000.0,
    "ft": 0.3048, "feet": 0.3048, "foot": 0.3048, "'": 0.3048,
    "in": 0.0254, "inch": 0.0254, "inches": 0.0254, '"': 0.0254, "英寸": 0.0254,
}  # fmt: skip
_FLOOR_WORDS = re.compile(r"(floors?|storeys?|stories|levels?|f|层|楼)$", re.IGNORECASE)


BLANK_WORDS = frozenset({"", "-", "--", "n/a", "na", "null", "none", "无", "/"})
NUL = "\x00"  # PostgreSQL's text and jsonb cannot hold it
MAX_FLOORS = 300  # above ground: more than any building has (the tallest have 160 or so)
# What a value can plausibly be; beyond it, it is "not understood" and kept as given (a
# 1e30 m building is a mistake, and would wreck every height-based answer).
MAX_HEIGHT_M = 1000.0  # the tallest building stands 828 m
MAX_DIAMETER_MM = 10_000.0  # the widest water and sewer tunnels are about 8 m across
ELEVATION_RANGE_M = (-500.0, 9000.0)  # the Dead Sea's shore is at -430 m, Everest 8,849 m
# Below ground (a negative depth, as some providers write it, too): tunnels lie 100 m deep.
DEPTH_RANGE_M = (-200.0, 200.0)
INT64 = 2**63  # integers stored as numbers must be within ±this


class NumberText(float):
    """A JSON number beyond a double (1e400): infinite as a float, but it keeps the text
    as written, to be kept as given and shown in messages."""

    text: str

    def __new__(cls, text: str) -> NumberText:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __repr__(self) -> str:
        return self.text


def json_float(text: str) -> float:
    """``parse_float`` for json.loads: a float, or a NumberText when it is beyond a double."""
    number = float(text)
    return number if math.isfinite(number) else NumberText(text)


def as_given(value: Any) -> Any:
    """A value as it was given, for keeping one that was not understood: a number beyond a
    double as its text (JSON cannot hold infinity), anything else as it is."""
    if isinstance(value, float) and not math.isfinite(value):
        return getattr(value, "text", repr(value))
    return value


def refuse_nul(what: str, value: str | None, *, option: str | None = None) -> None:
    """InvalidInput when ``value`` holds a NUL character, naming ``what`` it is (and the
    ``option`` it was given as, see InvalidInput)."""
    if value is not None and NUL in value:
        raise InvalidInput(
            f"{what} holds a NUL character (\\0), which cannot be stored: {value!r}", option=option
        )


class Storeys(int):
    """A whole number of floors (rounded up) that remembers the levels as given (3.5 for a
    half storey), from which a height is estimated."""

    exact: float

    def __new__(cls, levels: float) -> Storeys:
        storeys = super().__new__(cls, math.ceil(levels))
        storeys.exact = levels
        return storeys


def is_blank(value: Any) -> bool:
    """None, NaN, an empty or whitespace string, or a placeholder like "-" or "N/A"."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str):
        return value.strip().lower() in BLANK_WORDS
    return False


def parse_number(value: Any) -> float:
    """A plain number from a number or a string with decimal comma or thousands separators."""
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ValueError(f"too large a number ({len(str(abs(value)))} digits)") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        return float(value)
    text = str(value).strip()
    match = _NUMBER.search(text)
    if match is None:
        raise ValueError(f"no number in {value!r}")
    return _to_float(match.group(0))


def _to_float(token: str) -> float:
    """'12,5' -> 12.5; '1,234.5' -> 1234.5; '1.234,5' -> 1234.5; '1,234' -> 1234."""
    if "," in token and "." in token:
        # The later separator is the decimal one.
        if token.rfind(",") > token.rfind("."):
            token = token.replace(".", "").replace(",", ".")
        else:
            token = token.replace(",", "")
    elif token.count(",") > 1 or re.fullmatch(r"[-+]?\d{1,3},\d{3}", token):
        token = token.replace(",", "")  # thousands separators
    else:
        token = token.replace(",", ".")  # decimal comma
    number = float(token)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {token!r}")
    return number


def parse_length_m(value: Any) -> float:
    """A length in metres: 12.13, "12.13 m", "12,5米", "1213 cm", "40 ft"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return parse_number(value)
    text = str(value).strip().lower().replace("约", "").replace("~", "")
    match = _NUMBER.search(text)
    if match is None:
        raise ValueError(f"no length in {value!r}")
    number = _to_float(match.group(0))
    unit = text[match.end() :].strip().rstrip(".")
    if not unit:
        return number
    if unit not in _LENGTH_UNITS:
        raise ValueError(f"unknown length unit {unit!r} in {value!r}")
    return _finite(number * _LENGTH_UNITS[unit], value)


def _finite(number: float, value: Any) -> float:
    """``number``, unless a unit's factor took it past what a double holds."""
    if not math.isfinite(number):
        raise ValueError(f"too large a number: {value!r}")
    return number


def parse_diameter_mm(value: Any) -> float:
    """A pipe diameter in millimetres (see _diameter_mm); zero or less, or more than
    MAX_DIAMETER_MM, is refused."""
    diameter = _diameter_mm(value)
    if diameter <= 0:
        raise ValueError(f"a diameter must be more than zero: {value!r}")
    if diameter > MAX_DIAMETER_MM:
        raise ValueError(f"wider than any pipe (over {MAX_DIAMETER_MM:,.0f} mm): {value!r}")
    return diameter


def parse_height_m(value: Any) -> float:
    """A height in metres; below zero (heights stand above the base) or more than
    MAX_HEIGHT_M is refused."""
    height = parse_length_m(value)
    if height < 0:
        raise ValueError(f"a height cannot be below zero: {value!r}")
    if height > MAX_HEIGHT_M:
        raise ValueError(f"taller than any building (over {MAX_HEIGHT_M:,.0f} m): {value!r}")
    return height


def parse_elevation_m(value: Any) -> float:
    """An elevation (of the ground, a base, a pipe's invert) in metres, within
    ELEVATION_RANGE_M."""
    elevation = parse_length_m(value)
    low, high = ELEVATION_RANGE_M
    if not low <= elevation <= high:
        raise ValueError(
            f"an elevation beyond any on land ({low:,.0f} to {high:,.0f} m): {value!r}"
        )
    return elevation


def parse_depth_m(value: Any) -> float:
    """A depth below ground in metres, within DEPTH_RANGE_M."""
    depth = parse_length_m(value)
    low, high = DEPTH_RANGE_M
    if not low <= depth <= high:
        raise ValueError(f"deeper than anything is laid ({low:,.0f} to {high:,.0f} m): {value!r}")
    return depth


def _diameter_mm(value: Any) -> float:
    """A pipe diameter in millimetres: "DN300", "De110", "Φ300", "300mm", "0.3 m", '12"'.

    A bare number under 3 is read as metres (no pipe is 3 mm wide), otherwise as mm.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = parse_number(value)
        return number * 1000 if 0 < number < 3 else number
    text = str(value).strip().lower()
    text = re.sub(r"^(dn|de|d|φ|ф|ø|phi)\s*", "", text)
    match = _NUMBER.search(text)
    if match is None:
        raise ValueError(f"no diameter in {value!r}")
    number = _to_float(match.group(0))
    unit = text[match.end() :].strip()
    if not unit:
        return number * 1000 if 0 < number < 3 else number
    if unit not in _LENGTH_UNITS:
        raise ValueError(f"unknown diameter unit {unit!r} in {value!r}")
    return _finite(number * _LENGTH_UNITS[unit] * 1000, value)


def parse_floors(value: Any) -> int:
    """Floors above ground: 3, "3", "3 floors", "3F", "3层", "地上3层", "3.0".

    A fraction (OSM's building:levels=3.5, a half storey under the roof) counts as a floor:
    rounded up, as ``Storeys`` that keep the levels given for estimating a height. More
    than MAX_FLOORS is refused (the floors column is an integer, and no building has them).
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = parse_number(value)
    else:
        text = str(value).strip().replace("地上", "")
        match = _NUMBER.search(text)
        if match is None:
            raise ValueError(f"no floor count in {value!r}")
        unit = text[match.end() :].strip()
        if unit and not _FLOOR_WORDS.match(unit):
            raise ValueError(f"not a floor count: {value!r}")
        number = _to_float(match.group(0))
    if number < 0:
        raise ValueError(f"a floor count cannot be below zero: {value!r}")
    if number > MAX_FLOORS:
        raise ValueError(f"more floors than any building has (over {MAX_FLOORS}): {value!r}")
    return int(number) if number == int(number) else Storeys(number)


def parse_integer(value: Any) -> int:
    """A whole number (3, "3", "3.0"), within 64 bits: a fraction or more is refused."""
    if isinstance(value, int) and not isinstance(value, bool):  # exact: no float between
        if not -INT64 <= value < INT64:
            raise ValueError(f"too large a whole number (beyond 64 bits): {value!r}")
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,19}\s*", value):
        return parse_integer(int(value))
    number = parse_number(value)
    if number != int(number):
        raise ValueError(f"not a whole number: {value!r}")
    if not -INT64 <= number < INT64:
        raise ValueError(f"too large a whole number (beyond 64 bits): {value!r}")
    return int(number)


def parse_year(value: Any) -> int:
    """A year from 1998, "1998", "1998-05-01", "1998年", a date."""
    if isinstance(value, date | datetime):
        return value.year
    match = re.search(r"(1[89]\d\d|20\d\d)", str(value))
    if match is None:
        raise ValueError(f"no year in {value!r}")
    return int(match.group(1))


def parse_bool(value: Any) -> bool:
    """yes/no, true/false, 1/0, 是/否, 可/不可."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "t", "yes", "y", "是", "可", "可操作", "正常"}:
        return True
    if text in {"0", "false", "f", "no", "n", "否", "不可", "不可操作", "故障"}:
        return False
    raise ValueError(f"not yes or no: {value!r}")


def parse_text(value: Any) -> str:
    """Text as given, trimmed; numbers that are whole print without '.0'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def vocabulary(words: dict[str, tuple[str, ...]]) -> Any:
    """A parser mapping synonyms (any case, Chinese or English) onto the schema's words."""
    lookup = {}
    for canonical, synonyms in words.items():
        for word in (canonical, *synonyms):
            lookup[_normalise(word)] = canonical

    def parse(value: Any) -> str:
        key = _normalise(str(value))
        if key in lookup:
            return lookup[key]
        raise ValueError(f"{value!r} is not one of {', '.join(words)}")

    return parse


def open_vocabulary(words: dict[str, tuple[str, ...]]) -> Any:
    """Like ``vocabulary``, but a word it does not know is kept as given (trimmed).

    For open lists such as sensor kinds, where providers add new words: the known
    synonyms land on one word, the rest are imported rather than rejected.
    """
    closed = vocabulary(words)

    def parse(value: Any) -> str:
        try:
            return closed(value)  # type: ignore[no-any-return]
        except ValueError:
            return parse_text(value)

    return parse


def _normalise(word: str) -> str:
    return re.sub(r"[\s_\-:/]+", "", word.strip().lower())
