"""Opening a provider's file by its kind: a zip, a CSV, or any vector format GDAL reads
(with a GeoJSON GDAL refuses for a number beyond a double read as a request body is).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from layers.readers.archives import open_zip
from layers.readers.frames import FeatureFrame, FeatureReader, concat_frames
from layers.readers.geojson import frame_from_geojson
from layers.readers.json_text import JSON_TEXT_SUFFIXES, file_nul_features
from layers.readers.tables import CSV_SUFFIXES, read_csv
from layers.readers.vector import dbf_encoding, open_gdal
from layers.values import json_float
from twin.errors import InvalidInput

# The formats read from one file (a .shp beside its sidecars; a zip of any VECTOR_SUFFIXES):
# what an upload may be, with EPANET's (see layers.ingest.files).
READABLE_SUFFIXES = frozenset({*CSV_SUFFIXES, *JSON_TEXT_SUFFIXES, ".gpkg", ".zip", ".fgb",
                               ".shp", ".kml", ".gml", ".sqlite"})  # fmt: skip


def read_features(
    path: Path | str, *, layer: str | None = None, name: str | None = None
) -> FeatureFrame:
    """Read a whole vector file of any format GDAL knows, or a CSV with coordinates or WKT."""
    with open_features(path, layer=layer, name=name) as reader:
        frames = list(reader)
        if len(frames) == 1:
            return frames[0]
        return concat_frames(frames, reader)


@contextmanager
def open_features(
    path: Path | str, *, layer: str | None = None, name: str | None = None
) -> Iterator[FeatureReader]:
    """Open a vector file of any format GDAL knows, or a CSV, to read it in batches.

    GDAL formats stream through GDAL's Arrow interface: a million GeoPackage features
    read in well under a second, and an import works on one batch while the next is read.
    CSV files are read whole (one batch). ``name`` is what messages and reports call the
    file (an upload's own name, say); by default its file name.
    """
    path = Path(path)
    name = name or path.name
    check_path(path)
    suffix = path.suffix.lower()
    if suffix == ".zip":
        found = open_zip(path, layer=layer, name=name)
    elif suffix in CSV_SUFFIXES:
        if layer and layer != Path(name).stem:
            # A CSV has one layer whatever is asked for: the dataset would be named for one
            # the file does not have.
            raise InvalidInput(
                f"{name} has no layer {layer[:60]!r}: a {suffix[1:].upper()} file has one "
                f"layer, {Path(name).stem!r}; leave the layer out",
                option="layer",
            )
        found = read_csv(path.read_bytes(), name)
    else:
        encoding = None
        if suffix == ".shp":
            siblings = [p.name for p in path.parent.iterdir()]
            encoding = dbf_encoding(
                lambda name: (path.parent / name).read_bytes(), siblings, path.name
            )
        nul = file_nul_features(path, name) if suffix in JSON_TEXT_SUFFIXES else None
        found = (str(path), name, layer, encoding, nul)
    if isinstance(found, FeatureFrame):
        yield FeatureReader(found.source, found.crs, len(found), iter([found]))
        return
    location, source, gdal_layer, encoding, nul = found
    with ExitStack() as opened:
        try:
            reader = opened.enter_context(
                open_gdal(location, source, layer=gdal_layer, encoding=encoding, nul=nul)
            )
        except InvalidInput as refused:
            frame = (
                _geojson_gdal_cannot_read(path, name, refused)
                if suffix in (".geojson", ".json")
                else None
            )
            if frame is None:
                raise
            reader = FeatureReader(frame.source, frame.crs, len(frame), iter([frame]))
        yield reader


GDAL_NUMBER_FALLBACK_BYTES = 256 * 1024 * 1024


def _geojson_gdal_cannot_read(path: Path, name: str, refused: InvalidInput) -> FeatureFrame | None:
    """A GeoJSON file GDAL refused for a number beyond a double (``1e400``), read as a
    request body is, so only that value is set aside (kept as its text) and not the file."""
    if (
        "number" not in str(refused.__cause__ or "")
        or path.stat().st_size > GDAL_NUMBER_FALLBACK_BYTES
    ):
        return None
    try:
        document = json.loads(path.read_bytes(), parse_float=json_float)
    except (ValueError, RecursionError):
        return None
    frame = frame_from_geojson(document, name)
    named = (
        (document.get("crs") or {}).get("properties", {}).get("name")
        if isinstance(document, dict)
        else None
    )
    frame.crs = named if isinstance(named, str) else None
    return frame


def check_path(path: Path) -> None:
    """InvalidInput unless ``path`` is a file (or a FileGDB folder) that can be read."""
    if not path.exists():
        raise InvalidInput(f"no file at {path}")
    if path.is_dir() and path.suffix.lower() != ".gdb":
        raise InvalidInput(f"{path} is a folder: give the file itself")
