"""Values the data base can never hold (a NUL character, lists nested too deep), found
before writing, and values made fit for JSON properties."""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from layers.ingest.reasons import reject, reject_one
from layers.readers import Column, FeatureFrame, is_none
from layers.values import NUL
from twin.errors import InvalidInput

MAX_VALUE_DEPTH = 32  # lists and objects in a value nested deeper than this are refused


MAX_REFUSALS_NAMED = 5  # features a refused request body names in its message


def unstorable_values(frame: FeatureFrame) -> np.ndarray:
    """For each feature, why one of its values can never be stored (None if all can): a
    NUL character, which PostgreSQL's text and jsonb refuse, in a value, a field's name or
    the feature's id; lists and objects nested deeper than MAX_VALUE_DEPTH."""
    reasons = np.full(len(frame), None, dtype=object)
    for name, column in frame.fields.items():
        if NUL in name:
            given = ~is_none(np.asarray(python_values(column), dtype=object))
            why = f"field name {name!r} holds a NUL character (\\0), which cannot be stored"
            reject(reasons, given, why)
            continue
        for i, why in _unstorable_in(column):
            reject_one(reasons, i, f"{name}: {why}")
    for i, (given_id, properties) in (frame.written_nul or {}).items():
        # Values GDAL cut at a NUL, as the file writes them (see readers.nul_features).
        for name, value in properties.items():
            if NUL in name:
                why = f"field name {name!r} holds a NUL character (\\0), which cannot be stored"
            else:
                why = _unstorable(value, 0)
                why = why and f"{name}: {why}"
            if why:
                reject_one(reasons, i, why)
        if isinstance(given_id, str) and NUL in given_id:
            reject_one(reasons, i, "its id holds a NUL character (\\0), which cannot be stored")
    fids = frame.fids
    if fids.dtype == object and NUL in "".join(f for f in fids if isinstance(f, str)):
        for i, fid in enumerate(fids):
            if isinstance(fid, str) and NUL in fid:
                reject_one(reasons, i, "its id holds a NUL character (\\0), which cannot be stored")
    return reasons


def _unstorable_in(column: Column) -> list[tuple[int, str]]:
    """(feature, why) for each value of a column that cannot be stored."""
    if isinstance(column, pa.Array):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            found = pc.fill_null(pc.match_substring(column, NUL), False)
            at = np.flatnonzero(np.asarray(found, dtype=bool))
            return [(int(i), _NUL_VALUE) for i in at]
        if not (pa.types.is_nested(column.type) or pa.types.is_binary(column.type)):
            return []  # numbers, booleans, dates: nothing to refuse
        column = np.asarray(column.to_pylist(), dtype=object)
    texts = [v for v in column if isinstance(v, str)]
    nested = any(isinstance(v, dict | list | bytes) for v in column)
    if not nested and NUL not in "".join(texts):  # the usual case, found in C
        return []
    found = []
    for i, value in enumerate(column):
        why = _unstorable(value, 0)
        if why is not None:
            found.append((i, why))
    return found


_NUL_VALUE = "its value holds a NUL character (\\0), which cannot be stored"


def _unstorable(value: Any, depth: int) -> str | None:
    if isinstance(value, str):
        return _NUL_VALUE if NUL in value else None
    if isinstance(value, bytes):
        return _NUL_VALUE if b"\0" in value else None
    if isinstance(value, dict | list):
        if depth >= MAX_VALUE_DEPTH:
            return f"its value nests lists or objects more than {MAX_VALUE_DEPTH} deep"
        if isinstance(value, dict):
            for key in value:
                if NUL in str(key):
                    return "a key in its value holds a NUL character (\\0), which cannot be stored"
        for inner in value.values() if isinstance(value, dict) else value:
            why = _unstorable(inner, depth + 1)
            if why is not None:
                return why
    return None


def refuse_whole(frame: FeatureFrame, unstorable: np.ndarray, start: int) -> None:
    """InvalidInput naming the features of a request body that cannot be stored."""
    bad = np.flatnonzero(~is_none(unstorable))
    named = [
        f"{frame.labels[i] if frame.labels else f'feature {start + i + 1} ({frame.fids[i]})'}: "
        f"{unstorable[i]}"
        for i in bad[:MAX_REFUSALS_NAMED]
    ]
    more = f"; and {len(bad) - MAX_REFUSALS_NAMED:,} more" if len(bad) > MAX_REFUSALS_NAMED else ""
    raise InvalidInput(
        f"{frame.source}: nothing was stored: {len(bad):,} of {len(frame):,} features cannot be"
        f" stored as sent: {'; '.join(named)}{more}"
    )


def json_safe(value: Any, depth: int = 0) -> Any:
    """A value JSON can hold: numpy scalars unwrapped, NaN and infinity as null (inside
    lists and objects too), dates as ISO text."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | dict) and depth >= MAX_VALUE_DEPTH:
        return None  # its feature is rejected (see _unstorable)
    if isinstance(value, list):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str) and not value.strip():
        return None
    return value


def python_values(column: Column) -> list[Any]:
    """A column's values as Python values."""
    return column.to_pylist() if isinstance(column, pa.Array) else list(column)


def value_at(column: Column, i: int) -> Any:
    """The ``i``-th value of a column, as a Python value."""
    return column[i].as_py() if isinstance(column, pa.Array) else column[i]
