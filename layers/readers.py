"""Reading providers' files into one shape: fields, geometries, source ids and the file's CRS.

GDAL (through pyogrio) reads GeoJSON, GeoPackage, Shapefile (plain or zipped), FlatGeobuf
and every other vector format it knows; CSV with coordinate or WKT columns is read here so
that a file without them gets a message naming the columns it has.
"""

from __future__ import annotations

import csv
import io
import json
import math
import mmap
import re
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyogrio
import shapely
import shapely.geometry

from layers.values import json_float
from twin.errors import InvalidInput

MAX_UNZIPPED_BYTES = 4 * 1024**3  # a zip that claims more than this is refused
MAX_ZIP_RATIO = 200  # and so is one whose members expand more than this (zip bombs)
CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
# Formats GDAL reads from JSON text, where a value can hold an escaped NUL (\u0000).
JSON_TEXT_SUFFIXES = (".geojson", ".json", ".geojsonl", ".geojsons")
NUL_ESCAPE = b"\\u0000"
VECTOR_SUFFIXES = (".shp", ".gpkg", ".geojson", ".json", ".fgb", ".gml", ".kml", ".tab", ".mif",
                   ".sqlite", ".gdb", ".dxf", ".csv")  # fmt: skip
# The formats read from one file (a .shp beside its sidecars; a zip of any of the above):
# what an upload may be, with EPANET's (see layers.ingest.files).
READABLE_SUFFIXES = frozenset({*CSV_SUFFIXES, *JSON_TEXT_SUFFIXES, ".gpkg", ".zip", ".fgb",
                               ".shp", ".kml", ".gml", ".sqlite"})  # fmt: skip
X_COLUMNS = (
    "lon",
    "lng",
    "long",
    "longitude",
    "x",
    "经度",
    "x坐标",
    "东坐标",
    "easting",
    "point_x",
)
Y_COLUMNS = ("lat", "latitude", "y", "纬度", "y坐标", "北坐标", "northing", "point_y")
WKT_COLUMNS = ("wkt", "geometry", "geom", "the_geom", "shape", "几何", "坐标串")


Column = np.ndarray | pa.Array  # object arrays (None or NaN = blank) or Arrow arrays
BATCH_ROWS = 50_000  # features per batch when a file is read a batch at a time
FIRST_ROWS = 10_000  # the first batch is cut to this, so the data base starts sooner


@dataclass
class FeatureFrame:
    """Features read from one file (or one batch of it), column-oriented."""

    fields: dict[str, Column]  # source field -> values
    geoms: np.ndarray  # shapely geometries, None where a feature has none or it is unreadable
    fids: np.ndarray  # the file's own feature ids, as text
    crs: str | None  # the CRS the file declares, if any
    source: str  # what was read, for messages
    wkb: pa.Array | None = None  # the file's own WKB, when GDAL read it (see ingest)
    # Why a feature's coordinates could not be read (None where they could, or were absent).
    geometry_reasons: np.ndarray | None = None
    labels: list[str] | None = None  # how a request body's features are named in errors
    plain_table: bool = False  # a table without coordinate columns: no feature has a place
    # Features whose values as the file writes them hold a NUL character (\u0000), which
    # GDAL's C strings cut off: their row in this frame -> (id, properties) as written.
    written_nul: dict[int, tuple[Any, dict[str, Any]]] | None = None
    ids_given: bool = False  # fids are the features' own ids (GeoJSON "id"), not row numbers

    def __len__(self) -> int:
        return len(self.geoms)


@dataclass
class FeatureReader:
    """A file open for reading, a batch of features at a time (see ``open_features``)."""

    source: str
    crs: str | None
    count: int | None  # features in the file, when the format says so cheaply
    batches: Iterator[FeatureFrame] = field(repr=False)

    def __iter__(self) -> Iterator[FeatureFrame]:
        return self.batches


def read_features(
    path: Path | str, *, layer: str | None = None, name: str | None = None
) -> FeatureFrame:
    """Read a whole vector file of any format GDAL knows, or a CSV with coordinates or WKT."""
    with open_features(path, layer=layer, name=name) as reader:
        frames = list(reader)
        if len(frames) == 1:
            return frames[0]
        return _concat(frames, reader)


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
        found = _open_zip(path, layer=layer, name=name)
    elif suffix in CSV_SUFFIXES:
        if layer and layer != Path(name).stem:
            # A CSV has one layer whatever is asked for: the dataset would be named for one
            # the file does not have.
            raise InvalidInput(
                f"{name} has no layer {layer[:60]!r}: a {suffix[1:].upper()} file has one "
                f"layer, {Path(name).stem!r}; leave the layer out",
                option="layer",
            )
        found = _read_csv(path.read_bytes(), name)
    else:
        encoding = None
        if suffix == ".shp":
            siblings = [p.name for p in path.parent.iterdir()]
            encoding = _dbf_encoding(
                lambda name: (path.parent / name).read_bytes(), siblings, path.name
            )
        nul = _file_nul_features(path, name) if suffix in JSON_TEXT_SUFFIXES else None
        found = (str(path), name, layer, encoding, nul)
    if isinstance(found, FeatureFrame):
        yield FeatureReader(found.source, found.crs, len(found), iter([found]))
        return
    location, source, gdal_layer, encoding, nul = found
    with ExitStack() as opened:
        try:
            reader = opened.enter_context(
                _open_gdal(location, source, layer=gdal_layer, encoding=encoding, nul=nul)
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


def _concat(frames: list[FeatureFrame], reader: FeatureReader) -> FeatureFrame:
    if not frames:
        return FeatureFrame({}, np.empty(0, dtype=object), np.empty(0, dtype=object),
                            reader.crs, reader.source)  # fmt: skip
    names = list(frames[0].fields)
    wkbs = [f.wkb for f in frames]
    nul: dict[int, tuple[Any, dict[str, Any]]] = {}
    start = 0
    for f in frames:
        nul.update({start + i: v for i, v in (f.written_nul or {}).items()})
        start += len(f)
    return FeatureFrame(
        fields={n: pa.concat_arrays([f.fields[n] for f in frames]) for n in names},  # type: ignore[misc]
        geoms=np.concatenate([f.geoms for f in frames]),
        fids=np.concatenate([f.fids for f in frames]),
        crs=reader.crs,
        source=reader.source,
        wkb=None if any(w is None for w in wkbs) else pa.concat_arrays(wkbs),  # type: ignore[arg-type]
        written_nul=nul or None,
    )


def _dbf_encoding(read: Any, names: list[str], shp: str) -> str | None:
    """The text encoding of a shapefile's .dbf when no .cpg says it.

    Without a .cpg GDAL assumes ISO-8859-1, which turns the GBK that Chinese providers
    write into mojibake. Bytes that are not UTF-8 are read as GB18030 (a superset of GBK).
    """
    stem = shp[: -len(Path(shp).suffix)]
    by_lower = {n.lower(): n for n in names}
    if by_lower.get(f"{stem}.cpg".lower()):
        return None  # GDAL reads the .cpg itself
    dbf = by_lower.get(f"{stem}.dbf".lower())
    if dbf is None:
        return None
    sample = read(dbf)[:262_144]
    if all(b < 128 for b in sample):
        return None
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 4:  # not just a character cut at the sample's end
            return "GB18030"
    return "UTF-8"


def _open_zip(
    path: Path, *, layer: str | None, name: str
) -> FeatureFrame | tuple[str, str, str | None, str | None, NulFeatures | None]:
    """A CSV member read whole, or where GDAL finds the chosen member."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            total = sum(m.file_size for m in members)
            packed = sum(m.compress_size for m in members) or 1
            if total > MAX_UNZIPPED_BYTES or (
                total > 100 * 1024**2 and total / packed > MAX_ZIP_RATIO
            ):
                raise InvalidInput(
                    f"{name} would unpack to {total / 1024**2:,.0f} MB "
                    f"({total / packed:,.0f} times its size): refused as a possible zip bomb"
                )
            # The names as stored (how GDAL and zipfile find members) and as people read them.
            shown = {m.filename: _member_name(m) for m in members}
            names = [m.filename for m in members if not m.filename.startswith("__MACOSX")]
            data = [n for n in names if n.lower().endswith(VECTOR_SUFFIXES)]
            listed = ", ".join(shown[n] for n in data)
            if not data:
                found = ", ".join(shown[n] for n in names[:8]) or "nothing"
                raise InvalidInput(f"{name} holds no file of a vector format ({found})")
            # A zip of several datasets must say which one by --layer (its name or stem).
            if layer is not None:
                picked = [
                    n
                    for n in data
                    if layer in (n, Path(n).stem, Path(n).name)
                    or layer in (shown[n], Path(shown[n]).stem, Path(shown[n]).name)
                ]
                if not picked:
                    raise InvalidInput(f"{name} holds no dataset {layer!r} ({listed})")
                chosen = picked[0]
                layer = None  # a member is one layer
            elif len(data) > 1:
                raise InvalidInput(
                    f"{name} holds several datasets ({listed}): choose one as the layer",
                    option="layer",
                )
            else:
                chosen = data[0]
            if chosen.lower().endswith(tuple(CSV_SUFFIXES)):
                return _read_csv(archive.read(chosen), f"{name}/{shown[chosen]}")
            encoding = None
            if chosen.lower().endswith(".shp"):
                encoding = _dbf_encoding(archive.read, names, chosen)
            nul = None
            if chosen.lower().endswith(JSON_TEXT_SUFFIXES):
                with archive.open(chosen) as member:
                    if _stream_holds(member, NUL_ESCAPE):
                        nul = nul_features(archive.read(chosen), f"{name}/{shown[chosen]}")
    except zipfile.BadZipFile as exc:
        raise InvalidInput(f"{name} is not a readable zip archive ({exc})") from exc
    return f"/vsizip/{path}/{chosen}", f"{name}/{shown[chosen]}", layer, encoding, nul


def _member_name(member: zipfile.ZipInfo) -> str:
    """A zip member's name as its maker wrote it: many Chinese tools store UTF-8 (or GBK)
    names without the flag that says so, which zipfile then reads as CP437."""
    if member.flag_bits & 0x800:
        return member.filename
    raw = member.filename.encode("cp437")
    for encoding in ("utf-8", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return member.filename


NulFeatures = tuple[int, dict[int, tuple[Any, dict[str, Any]]]]  # features, those with NUL
_UNREAD = object()


def _file_nul_features(path: Path, name: str) -> NulFeatures | None:
    """The features of a JSON text file whose values hold a NUL (see ``nul_features``);
    None, after one search of the bytes (mapped, not read), when it writes none."""
    if path.stat().st_size == 0:
        return None
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as view:
        if view.find(NUL_ESCAPE) < 0:
            return None
        return nul_features(view[:], name)


def _stream_holds(stream: Any, needle: bytes, chunk: int = 1024 * 1024) -> bool:
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


@contextmanager
def _open_gdal(
    location: str,
    name: str,
    *,
    layer: str | None,
    encoding: str | None,
    nul: NulFeatures | None = None,
) -> Iterator[FeatureReader]:
    with ExitStack() as opened:
        try:
            layers = pyogrio.list_layers(location)
            names = ", ".join(str(row[0]) for row in layers)
            if layer is None and len(layers) > 1:
                raise InvalidInput(
                    f"{name} has several layers ({names}): choose one as the layer",
                    option="layer",
                )
            if layer is not None and layer not in {str(row[0]) for row in layers}:
                raise InvalidInput(f"{name} has no layer {layer!r} (its layers: {names})")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # GDAL's notes about the file come as errors
                count = pyogrio.read_info(location, layer=layer, encoding=encoding)["features"]
                meta, stream = opened.enter_context(
                    pyogrio.raw.open_arrow(
                        location, layer=layer, encoding=encoding, return_fids=True,
                        batch_size=BATCH_ROWS, use_pyarrow=True,
                    )
                )  # fmt: skip
        # pyogrio's own errors (DataSourceError …) and GDAL's come as these.
        except (ValueError, OSError, RuntimeError) as exc:
            message = _gdal_message(exc, location, name)
            raise InvalidInput(f"cannot read {name}: {message}") from exc
        written_nul = nul[1] if nul else {}
        if written_nul and count >= 0 and count != nul[0]:
            # GDAL read the features otherwise than they are written: no place to name.
            raise InvalidInput(
                f"{name} holds NUL characters (\\u0000), which cannot be stored, in "
                f"{len(written_nul):,} features: remove them and import it again"
            )
        geometry = meta.get("geometry_name") or "wkb_geometry"
        if geometry not in stream.schema.names:
            raise InvalidInput(f"{name} has no geometry column")
        fid = meta.get("fid_column") or "OGC_FID"
        crs = meta.get("crs")
        yield FeatureReader(
            name,
            crs,
            count if count >= 0 else None,
            _gdal_batches(stream, location, name, crs, fid, geometry, written_nul),
        )


def _gdal_batches(
    stream: Any,
    location: str,
    name: str,
    crs: str | None,
    fid: str,
    geometry: str,
    written_nul: dict[int, tuple[Any, dict[str, Any]]],
) -> Iterator[FeatureFrame]:
    first = True
    start = 0  # the place in the file of the batch's first feature

    def frame(batch: pa.RecordBatch) -> FeatureFrame:
        nonlocal start
        made = _frame(batch, name, crs, fid, geometry)
        if written_nul:
            end = start + batch.num_rows
            made.written_nul = {
                i - start: v for i, v in written_nul.items() if start <= i < end
            } or None
        start += batch.num_rows
        return made

    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                batch = stream.read_next_batch()
        except StopIteration:
            return
        # pyogrio's own errors (DataSourceError …) are RuntimeErrors.
        except (pa.ArrowException, ValueError, OSError, RuntimeError) as exc:
            raise InvalidInput(f"cannot read {name}: {_gdal_message(exc, location, name)}") from exc
        if first and batch.num_rows > FIRST_ROWS:
            # A small first batch: the data base starts storing sooner.
            yield frame(batch.slice(0, FIRST_ROWS))
            batch = batch.slice(FIRST_ROWS)
        first = False
        yield frame(batch)


def _frame(
    batch: pa.RecordBatch, name: str, crs: str | None, fid: str, geometry: str
) -> FeatureFrame:
    wkb = batch.column(geometry)
    if pa.types.is_large_binary(wkb.type):
        wkb = wkb.cast(pa.binary())
    fields = {
        column: _plain(batch.column(column))
        for column in batch.schema.names
        if column not in (fid, geometry)
    }
    return FeatureFrame(
        fields=fields,
        geoms=shapely.from_wkb(wkb.to_numpy(zero_copy_only=False), on_invalid="ignore"),
        fids=np.asarray(pc.cast(batch.column(fid), pa.string()).to_numpy(zero_copy_only=False)),
        crs=crs,
        source=name,
        wkb=wkb,
    )


def _plain(column: pa.Array) -> pa.Array:
    """Dates and times as ISO text (parsers read years from it); other types as they are."""
    if pa.types.is_temporal(column.type):
        return pc.cast(column, pa.string())
    return column


def _gdal_message(exc: Exception, location: str, name: str) -> str:
    """GDAL's first line, naming the file as the person knows it (not where we put it)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "SHAPE_RESTORE_SHX" in text or ".shx" in text:
        return (
            "a shapefile is several files (.shp, .shx, .dbf, .prj): keep them together, "
            "or send them as one zip"
        )
    if "Too many nested objects" in text:  # GDAL's JSON reader has a depth limit
        return (
            "it nests lists or objects too deeply to read; a feature's properties and "
            "coordinates nest a few levels at most"
        )
    if "disk image is malformed" in text or "file is not a database" in text:
        return "not a readable GeoPackage (is the file complete? it looks truncated or damaged)"
    text = text.replace(location, name).replace(str(Path(location).parent) + "/", "")
    # GDAL's advice to prefix the path with a driver name is not something twin takes.
    text = re.sub(r"[;,]?\s*It might help to specify the correct driver.*$", "", text)
    text = re.sub(r"\s*\(?[Pp]refix.*driver.*$", "", text)
    if "not recognized as" in text or "not a supported file format" in text:
        text += " (is the file complete, and its extension right?)"
    return text


def _read_csv(raw: bytes, name: str) -> FeatureFrame:
    text = _decode(raw, name)
    sample = text[:20_000]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(reader)
    except StopIteration as exc:
        raise InvalidInput(f"{name} is empty") from exc
    header = [h.strip() for h in header]
    rows = list(reader)
    columns: dict[str, list[Any]] = {h: [] for h in header}
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header) and any(cell.strip() for cell in row):
            if len(row) < len(header):
                row = row + [""] * (len(header) - len(row))
            else:
                raise InvalidInput(
                    f"{name} line {number}: {len(row)} values for {len(header)} columns"
                )
        for h, cell in zip(header, row, strict=False):
            columns[h].append(cell.strip() or None)
    lowered = {h.lower(): h for h in header}
    x_col = next((lowered[c] for c in X_COLUMNS if c in lowered), None)
    y_col = next((lowered[c] for c in Y_COLUMNS if c in lowered), None)
    wkt_col = next((lowered[c] for c in WKT_COLUMNS if c in lowered), None)
    n = len(rows)
    reasons = None
    plain = False
    if x_col and y_col:
        xs, x_why = _coordinates(columns[x_col], x_col)
        ys, y_why = _coordinates(columns[y_col], y_col)
        ok = is_none(x_why) & is_none(y_why) & ~np.isnan(xs) & ~np.isnan(ys)
        geoms = np.full(n, None, dtype=object)
        geoms[ok] = shapely.points(xs[ok], ys[ok])
        reasons = np.where(is_none(x_why), y_why, x_why)
        used = {x_col, y_col}
    elif wkt_col:
        geoms = np.array([_wkt(v) for v in columns[wkt_col]], dtype=object)
        used = {wkt_col}
    else:
        # A plain table (a list of units, say): the importer refuses it for layers whose
        # features need a place, naming the columns it has (see NO_COORDINATES).
        geoms, used, plain = np.full(n, None, dtype=object), set(), True
    fields = {h: np.array(v, dtype=object) for h, v in columns.items() if h not in used}
    return FeatureFrame(
        fields=fields,
        geoms=geoms,
        fids=np.array([str(i) for i in range(1, n + 1)], dtype=object),
        crs=None,
        source=name,
        geometry_reasons=reasons,
        plain_table=plain,
    )


def no_coordinates(frame: FeatureFrame) -> str:
    """The message for a plain table imported into a layer whose features need a place."""
    return (
        f"{frame.source} has no coordinate columns: expected lon/lat, x/y or WKT "
        f"(its columns are {', '.join(frame.fields)})"
    )


def is_none(values: np.ndarray) -> np.ndarray:
    """Where an object array holds None, in C rather than a Python loop."""
    return np.equal(values, None)


def _decode(raw: bytes, name: str) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise InvalidInput(f"{name} is neither UTF-8 nor GB18030 text")


def _coordinates(values: list[str | None], column: str) -> tuple[np.ndarray, np.ndarray]:
    """A coordinate column's numbers (NaN where empty) and why each given value that is
    not a finite number cannot be one (None where it is, or the cell is empty)."""
    numbers = np.full(len(values), np.nan)
    reasons = np.full(len(values), None, dtype=object)
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            number = float(value.replace(",", "."))
        except ValueError:
            reasons[i] = f"{column} {value!r} is not a number"
            continue
        if math.isnan(number):
            reasons[i] = f"{column} {value!r} is not a number"
        elif math.isinf(number):
            reasons[i] = f"{column} {value!r} is not a finite number"
        else:
            numbers[i] = number
    return numbers, reasons


def _wkt(value: str | None) -> Any:
    if value is None:
        return None
    try:
        with warnings.catch_warnings():  # NaN in WKT: the import names it, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            return shapely.from_wkt(value)
    except shapely.errors.GEOSException:
        return None


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
        with warnings.catch_warnings():  # NaN coordinates: refused by the import, naming them
            warnings.simplefilter("ignore", RuntimeWarning)
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
