"""NUL characters (\\u0000) in JSON text files, which GDAL's C strings cut off: the bytes are
searched once (mapped, or streamed from a zip), and only a file that writes one is parsed.
"""

from __future__ import annotations

import json
import mmap
import re
from pathlib import Path
from typing import Any

import orjson

from twin.errors import InvalidInput

# Formats GDAL reads from JSON text, where a value can hold an escaped NUL (\u0000).
JSON_TEXT_SUFFIXES = (".geojson", ".json", ".geojsonl", ".geojsons")
NUL_ESCAPE = b"\\u0000"

NulFeatures = tuple[int, dict[int, tuple[Any, dict[str, Any]]]]  # features, those with NUL
_UNREAD = object()


def file_nul_features(path: Path, name: str) -> NulFeatures | None:
    """The features of a JSON text file whose values hold a NUL (see ``nul_features``);
    None, after one search of the bytes (mapped, not read), when it writes none."""
    if path.stat().st_size == 0:
        return None
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as view:
        if view.find(NUL_ESCAPE) < 0:
            return None
        return nul_features(view[:], name)


def stream_holds(stream: Any, needle: bytes, chunk: int = 1024 * 1024) -> bool:
    """Whether a stream's bytes hold ``needle``, read a chunk at a time."""
    tail = b""
    while block := stream.read(chunk):
        if needle in tail + block[: len(needle) - 1] or needle in block:
            return True
        tail = block[-(len(needle) - 1) :]
    return False


def nul_features(data: bytes, name: str) -> NulFeatures:
    """How many features a GeoJSON (or newline-delimited GeoJSON, or Esri JSON) text holds,
    and those whose id, property names or values hold a NUL character, by their place in
    the file (the order GDAL reads them in): place -> (id, properties) as written.

    GDAL reads text as C strings, which end at a NUL: "a\\u0000b" arrives as "a". The
    importer rejects these features naming the field, as it does a CSV's.
    """
    document = _parse_json(data)
    features = _features_of(document) if document is not _UNREAD else None
    # Not one JSON text: a feature a line (GeoJSONSeq, with or without RS separators).
    if features is None and document is _UNREAD:
        pieces = [p for p in re.split(rb"[\n\x1e]", data) if p.strip()]
        if len(pieces) > 1:
            features = [_parse_json(p) if NUL_ESCAPE in p else None for p in pieces]
            if any(f is _UNREAD for f in features):
                features = None
    if features is None:
        if document is not _UNREAD and not _holds_nul(document):
            return 0, {}  # the escape was text ("\\\\u0000"), or no feature has it
        raise InvalidInput(
            f"{name} holds NUL characters (\\u0000), which cannot be stored, where its "
            "features cannot be told apart: remove them and import it again"
        )
    found = {}
    for i, feature in enumerate(features):
        if not isinstance(feature, dict):
            continue
        properties = feature.get("properties", feature.get("attributes"))
        properties = properties if isinstance(properties, dict) else {}
        if _holds_nul([feature.get("id"), properties]):
            found[i] = (feature.get("id"), properties)
    return len(features), found


def _parse_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:  # NaN, Infinity and numbers beyond a double, which GDAL reads too
        return json.loads(data)
    except (ValueError, RecursionError):
        return _UNREAD


def _features_of(document: Any) -> list[Any] | None:
    if not isinstance(document, dict):
        return None
    if document.get("type") == "Feature":
        return [document]
    features = document.get("features")  # GeoJSON's FeatureCollection, Esri JSON's
    return features if isinstance(features, list) else None


def _holds_nul(value: Any) -> bool:
    """Whether text anywhere in a JSON value (a key included) holds a NUL character."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
