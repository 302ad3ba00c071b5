"""GeoJSON already parsed (a request body, or a file GDAL cannot read) into a FeatureFrame,
each geometry's coordinates checked as they are read and the reason kept where they fail.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
import shapely.geometry

from layers.readers.frames import FeatureFrame
from twin.errors import InvalidInput

MAX_GEOJSON_FEATURES = 50_000
# How deep each GeoJSON type nests its positions (a position is a list of numbers).
_POSITION_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2,
                   "Polygon": 2, "MultiPolygon": 3}  # fmt: skip


def frame_from_geojson(
    document: Any,
    source: str = "request body",
    axes: tuple[str, str] = ("longitude", "latitude"),
) -> FeatureFrame:
    """Features from a GeoJSON FeatureCollection (or one Feature) already parsed from JSON.

    Coordinates are checked as they are read: one that is text, true/false, a list or a
    number too large for a double makes its feature's geometry unreadable, and the
    reason (``geometry_reasons``) names it, in ``axes``' words.
    """
    if not isinstance(document, dict):
        raise InvalidInput(f"{source}: expected a GeoJSON object")
    if document.get("type") == "Feature":
        features = [document]
    elif document.get("type") == "FeatureCollection" and isinstance(document.get("features"), list):
        features = document["features"]
    else:
        raise InvalidInput(f"{source}: expected a GeoJSON Feature or FeatureCollection")
    if len(features) > MAX_GEOJSON_FEATURES:
        raise InvalidInput(
            f"{source}: {len(features):,} features; send at most {MAX_GEOJSON_FEATURES:,} "
            "per request or upload a file"
        )
    names: dict[str, None] = {}
    geoms = np.full(len(features), None, dtype=object)
    reasons = np.full(len(features), None, dtype=object)
    fids = np.empty(len(features), dtype=object)
    labels = []
    for i, feature in enumerate(features):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise InvalidInput(f"{source}: features[{i}] is not a GeoJSON Feature")
        properties = feature.get("properties") or {}
        if not isinstance(properties, dict):
            raise InvalidInput(f"{source}: features[{i}].properties is not an object")
        names.update(dict.fromkeys(properties))
        given = feature.get("id")
        if isinstance(given, bool) or not isinstance(given, str | int | float | None):
            raise InvalidInput(f"{source}: features[{i}].id must be a string or a number")
        fids[i] = str(given) if given is not None else str(i + 1)
        labels.append(f"features[{i}]" + (f" (id {given!r})" if given is not None else ""))
        geometry = feature.get("geometry")
        if geometry is not None:
            geoms[i], reasons[i] = geojson_geometry(geometry, axes)
    fields = {
        name: np.array([(f.get("properties") or {}).get(name) for f in features], dtype=object)
        for name in names
    }
    ids_given = all(isinstance(f, dict) and f.get("id") is not None for f in features)
    return FeatureFrame(fields=fields, geoms=geoms, fids=fids, crs=None, source=source,
                        geometry_reasons=reasons, labels=labels, ids_given=ids_given)  # fmt: skip


def geojson_geometry(geometry: Any, axes: tuple[str, str]) -> tuple[Any, str | None]:
    """A GeoJSON geometry as shapely's, or None and why its coordinates cannot be read."""
    if not isinstance(geometry, dict):
        return None, "the geometry is not a GeoJSON object"
    kind = geometry.get("type")
    if kind == "GeometryCollection":
        members = geometry.get("geometries")
        if not isinstance(members, list):
            return None, "a GeometryCollection needs a list of geometries"
        for m, member in enumerate(members):
            _, why = geojson_geometry(member, axes)
            if why is not None:
                return None, f"member {m} of the collection: {why}"
    elif kind in _POSITION_DEPTH:
        why = _check_positions(geometry.get("coordinates"), kind, [], axes)
        if why is None and kind in ("Polygon", "MultiPolygon"):
            why = _open_ring(geometry["coordinates"], kind)
        if why is not None:
            return None, why
    else:
        return None, f"{kind!r} is not a GeoJSON geometry type"
    try:
        # NaN coordinates: refused by the import, naming them (errstate: this thread's only)
        with np.errstate(invalid="ignore"):
            return shapely.geometry.shape(geometry), None
    except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.GEOSException):
        return None, f"a {kind} with these coordinates is not a geometry"


def _open_ring(coordinates: list[Any], kind: str) -> str | None:
    """Why a ring of a (Multi)Polygon is not one as RFC 7946 has it (four positions or
    more, the last the first): shapely would close it silently, a guess at what was meant."""
    polygons = [coordinates] if kind == "Polygon" else coordinates
    for p, rings in enumerate(polygons):
        for r, ring in enumerate(rings):
            if len(ring) < 4 or ring[0] != ring[-1]:
                where = f"ring {r}" + (f" of part {p}" if kind == "MultiPolygon" else "")
                return (
                    f"{where} is not closed: a ring has four positions or more and ends "
                    "where it starts"
                )
    return None


def _check_positions(value: Any, kind: str, path: list[int], axes: tuple[str, str]) -> str | None:
    """Why the (nested) coordinates of a ``kind`` are not numbers as GeoJSON has them."""
    if len(path) < _POSITION_DEPTH[kind]:
        if not isinstance(value, list):
            return f"{_where(kind, path)}: the coordinates of a {kind} are nested lists"
        for j, inner in enumerate(value):
            why = _check_positions(inner, kind, [*path, j], axes)
            if why is not None:
                return why
        return None
    where = _where(kind, path)
    if not isinstance(value, list) or not 2 <= len(value) <= 3:
        return f"{where}: a position is a list of 2 or 3 numbers, not {_shown(value)}"
    for axis, number in enumerate(value):
        name = (*axes, "height")[axis]
        if isinstance(number, bool) or not isinstance(number, int | float):
            what = {str: "text", list: "a list", dict: "an object"}.get(type(number), "")
            what = "true/false" if isinstance(number, bool) else what or "null"
            return f"{where}: {name} {_shown(number)} is {what}, not a number"
        if isinstance(number, int):
            try:
                float(number)
            except OverflowError:
                return f"{where}: {name} ({len(str(abs(number)))} digits) is too large a number"
    return None


def _where(kind: str, path: list[int]) -> str:
    """A position's place in words, as twin.crs.position says it."""
    if kind == "Point":
        return "the point"
    if kind == "MultiPoint":
        return f"part {path[0]}" if path else "the points"
    words: list[str] = []
    names = {"LineString": ("coordinate",), "MultiLineString": ("part", "coordinate"),
             "Polygon": ("ring", "coordinate"),
             "MultiPolygon": ("part", "ring", "coordinate")}[kind]  # fmt: skip
    for name, index in zip(names, path, strict=False):
        words.insert(0, f"{name} {index}")
    return " of ".join(words) or f"the {kind}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
