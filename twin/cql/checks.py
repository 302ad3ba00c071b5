"""Checks of the values a filter gives before they reach the data base: text PostgreSQL can
store, geometries' types, nesting and rings, and positions in longitude/latitude.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from twin.cql.words import as_written, refuse
from twin.crs import coordinate_fault


def is_number(value: Any) -> bool:
    """A number, not a boolean (which Python counts as one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_text(value: str) -> None:
    """Text PostgreSQL can store: no NUL, nothing UTF-8 cannot encode."""
    if "\x00" in value:
        shown = as_written(value).replace("\x00", "\\0")
        refuse(f"text cannot hold a NUL character (%00): {shown}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        refuse("text holds a character that is not Unicode (an unpaired surrogate)")


def positions(shape: dict[str, Any]) -> Iterator[Any]:
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
            refuse("a geometry's coordinates are lists of numbers")
    return iter(found)


_GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                   "MultiPolygon", "GeometryCollection")  # fmt: skip


def check_parts(shape: dict[str, Any]) -> None:
    """Refuse, in words, what shapely would refuse in its own (or close silently): a line of
    one position, a ring of fewer than four or one that does not end where it starts."""
    stack: list[tuple[dict[str, Any], str]] = [(shape, "")]
    while stack:
        item, member = stack.pop()
        kind = item.get("type")
        if kind not in _GEOMETRY_TYPES:
            refuse(f"{as_written(str(kind))} is not a geometry type ({', '.join(_GEOMETRY_TYPES)})")
        if kind == "GeometryCollection":
            members = list(item.get("geometries") or [])
            if not all(isinstance(m, dict) for m in members):
                refuse("a GeometryCollection's geometries are geometries")
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
            refuse(nesting)
        for p, part in enumerate(coordinates):
            of_part = f" of part {p}" if kind.startswith("Multi") else ""
            lines = [part] if "LineString" in kind else part
            if not _is_list(lines) or not all(_is_list(x) and all(map(_is_list, x)) for x in lines):
                refuse(nesting)
            if "LineString" in kind:
                if len(part) < 2:
                    refuse(f"{said} the line{of_part} needs two positions or more")
                continue
            for r, ring in enumerate(part):
                if len(ring) < 4 or list(ring[0]) != list(ring[-1]):
                    which = "the outer ring" if r == 0 else f"ring {r} (a hole)"
                    refuse(
                        f"{said} {which}{of_part} is not closed: a ring has four "
                        "positions or more and ends where it starts"
                    )


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


def check_position(position: Any, where: str) -> None:
    """Refuse a position that is not two or three numbers on the globe (longitude, latitude)."""
    if not all(is_number(v) for v in position) or not 2 <= len(position) <= 3:
        refuse(f"{where} is not a position of two or three numbers")
    if not all(math.isfinite(v) for v in position[2:]):
        refuse(f"{where}: height {position[2]} is not a finite number")
    fault = coordinate_fault(position[0], position[1])  # longitude/latitude, as every door's
    if fault is not None:
        refuse(f"{where}: {fault}")
