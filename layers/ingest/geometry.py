"""Geometries as the layer stores them: the file's CRS found (or given), coordinates
checked and converted to the storage CRS, repaired or fitted to the layer's family
(polygon, line, point), or rejected with the reason; EWKB made straight from the file's
WKB where nothing needed changing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from layers.ingest.reasons import reject, reject_one
from layers.ingest.report import ImportOptions
from layers.kinds import LayerKind
from layers.readers import FeatureFrame, is_none
from twin.bulk import arrow_offsets, ewkb
from twin.crs import (
    SourceCRS,
    axes,
    first_bad_coordinate,
    implausible,
    non_finite,
    off_the_globe,
    resolve_crs,
    to_storage,
)
from twin.errors import InvalidInput
from twin.schema import SRID

SIMPLE_TYPES = {"polygon": (3, 6), "line": (1,), "point": (0,)}  # shapely type ids


def storage_ewkb(wkb: pa.Array, take: np.ndarray, srid: int) -> tuple[pa.Array, np.ndarray]:
    """EWKB with ``srid`` for 2D little-endian WKB, polygons wrapped as multi.

    Returns the EWKB (a binary array, null where not made) and where it was made: among
    ``take``, the points, lines, polygons and multipolygons GDAL wrote in the usual byte
    order; anything else is left to shapely. Works on whole arrays at once: each
    feature's header is put in front of the file's own bytes.
    """
    n = len(wkb)
    offsets = arrow_offsets(wkb)
    data = wkb.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1].astype(np.int64)
    usable = take & (np.diff(offsets) >= 9) & np.asarray(wkb.is_valid(), dtype=bool)
    kind = np.zeros(n, dtype=np.int64)
    at = starts[usable]
    little = raw[at] == 1
    kind[usable] = np.where(
        little,
        raw[at + 1].astype(np.int64) | raw[at + 2].astype(np.int64) << 8
        | raw[at + 3].astype(np.int64) << 16 | raw[at + 4].astype(np.int64) << 24,
        0,
    )  # fmt: skip
    made = usable & np.isin(kind, (1, 2, 3, 6))
    if not made.any():
        return pa.nulls(n, pa.binary()), made
    srid_bytes = srid.to_bytes(4, "little")
    # A polygon keeps its own WKB inside a one-part multipolygon; the others get the SRID
    # flag and the SRID written into their own header (its first 5 bytes).
    polygon_header = b"\x01" + (6 | 0x20000000).to_bytes(4, "little") + srid_bytes + b"\x01\0\0\0"
    polygons = kind == 3
    if (polygons | ~made).all():
        made_ewkb = pc.binary_join_element_wise(polygon_header, wkb, b"")
    else:
        headers = pa.array(
            [b"\x01" + (t | 0x20000000).to_bytes(4, "little") + srid_bytes for t in (1, 2, 6)]
            + [polygon_header]
        )
        header_of = np.select([kind == 1, kind == 2, kind == 6], [0, 1, 2], 3)
        body = pc.if_else(pa.array(polygons), wkb, pc.binary_slice(wkb, 5, 2**31 - 1))
        made_ewkb = pc.binary_join_element_wise(headers.take(pa.array(header_of)), body, b"")
    if made.all():
        return made_ewkb, made
    return pc.if_else(pa.array(made), made_ewkb, pa.scalar(None, pa.binary())), made


MAX_COORDINATE = 1e9  # metres or degrees: past any CRS's range (Web Mercator's is 2e7)


def source_crs(frame: FeatureFrame, options: ImportOptions) -> SourceCRS | None:
    """The CRS the file is read in: as given, as the file says, or (when neither)
    longitude/latitude if most features fit it; InvalidInput asking for it otherwise."""
    if options.crs:
        return resolve_crs(options.crs, "crs")
    if frame.crs:
        return resolve_crs(frame.crs)
    present = ~shapely.is_missing(frame.geoms) & ~shapely.is_empty(frame.geoms)
    if not present.any():
        return None
    # No CRS stated: only plain longitude/latitude is a safe guess, and only if most
    # features fit it (the few that do not are rejected one by one, with the reason).
    # Each feature is judged by its first coordinate: a wrong CRS moves all of them, a bad
    # vertex only itself (one feature with one vertex at latitude 95 is not a CRS question).
    wgs84 = resolve_crs("EPSG:4326")
    firsts = first_points(frame.geoms)
    judged = present & says_crs(firsts)
    wrong = ~is_none(implausible(firsts, wgs84)) & judged
    if wrong.sum() <= 0.5 * judged.sum():
        return wgs84
    i = int(np.flatnonzero(wrong)[0])
    x, y = shapely.get_coordinates(firsts[i : i + 1])[0]
    raise InvalidInput(
        f"{frame.source} does not say its CRS and its coordinates (e.g. {_xy(x, y)}) are "
        "not longitude/latitude: give its CRS, e.g. EPSG:4549",
        option="crs",
    )


def says_crs(points: np.ndarray) -> np.ndarray:
    """Which points can say something of the CRS: a coordinate that is no number, or larger
    than any CRS's (inf, 1e32), does not; such a feature is rejected for it alone."""
    xy = np.full((len(points), 2), np.inf)
    has_point = ~is_none(points)
    if has_point.any():
        xy[has_point] = shapely.get_coordinates(points[has_point])[:, :2]
    return np.asarray((np.abs(np.nan_to_num(xy, nan=np.inf)) < MAX_COORDINATE).all(axis=1))


def first_points(geoms: np.ndarray) -> np.ndarray:
    """Each geometry's first coordinate as a point (None where it has none)."""
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    which, starts = np.unique(index, return_index=True)
    firsts = np.full(len(geoms), None, dtype=object)
    firsts[which] = shapely.points(coords[starts])
    return firsts


def _xy(x: float, y: float) -> str:
    """A coordinate pair as a person reads it: no exponents, no trailing noise."""
    return f"{x:.10g}, {y:.10g}" if max(abs(x), abs(y)) < 1e10 else f"{x:.6g}, {y:.6g}"


def other_stated_crs(stated: str | None, used: SourceCRS) -> str | None:
    """The CRS the file states, when it is not the one used (given over it)."""
    if not stated:
        return None
    try:
        own = resolve_crs(stated)
    except InvalidInput:
        return None
    if own.crs is not None and used.crs is not None:
        same = own.crs.equals(used.crs, ignore_axis_order=True)
    else:
        same = own.name == used.name
    return None if same else own.name


def prepare_geometries(
    kind: LayerKind,
    frame: FeatureFrame,
    source: SourceCRS | None,
    reasons: np.ndarray,
    valid_as_read: np.ndarray | None = None,
    unstorable: np.ndarray | None = None,
) -> tuple[np.ndarray, pa.Array | None, dict[int, str]]:
    """Geometries in the storage CRS and of the layer's type, EWKB straight from the
    file where nothing needed changing, and what was repaired; rejections go to ``reasons``,
    and those of coordinates the data base must never hold (no number, off the globe)
    to ``unstorable`` as well, when given: a request body is refused for them.
    """
    geoms = np.asarray(frame.geoms, dtype=object)
    if unstorable is None:
        unstorable = np.full(len(geoms), None, dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if frame.geometry_reasons is not None:  # coordinates the reader could not take
        unread = ~is_none(frame.geometry_reasons)
        for i in np.flatnonzero(unread):
            reject_one(unstorable, i, frame.geometry_reasons[i])
            reject_one(reasons, i, frame.geometry_reasons[i])
    if not kind.geometry_optional:
        reject(reasons, missing, "no geometry (empty, missing or unreadable)")
    present = ~missing
    if present.any():
        # NaN or infinite coordinates: GEOS finds them invalid, so only those are looked at.
        valid = valid_as_read if valid_as_read is not None else shapely.is_valid(geoms)
        bad_numbers = non_finite(geoms, source, ~present | valid)
        for i in np.flatnonzero(~is_none(bad_numbers)):
            reject_one(unstorable, i, bad_numbers[i])
            reject_one(reasons, i, bad_numbers[i])
        present &= is_none(bad_numbers)
    if source is not None and present.any():
        wrong = implausible(geoms, source)
        bad = ~is_none(wrong) & present
        # The file is in another CRS when most features' first coordinates are off; a
        # feature with one bad vertex is rejected alone (see source_crs).
        points = first_points(geoms)
        judged = present & says_crs(points)
        firsts = implausible(points, source)
        if (~is_none(firsts) & judged).sum() > 0.5 * judged.sum():
            i = int(np.flatnonzero(~is_none(firsts) & judged)[0])
            x, y = shapely.get_coordinates(geoms[i : i + 1])[0]
            stated = other_stated_crs(frame.crs, source)
            if stated:
                hint = f" (the file itself says {stated}: leave out the CRS given)"
            elif source.is_geographic and max(abs(x), abs(y)) > 1000:
                hint = " (these look like metres: is the file projected? give its CRS)"
            elif source.is_geographic and abs(x) <= 90 and abs(y) <= 180:
                hint = " (are longitude and latitude swapped? x is longitude, y latitude)"
            else:
                hint = " (give the right CRS)"
            raise InvalidInput(
                f"coordinates of {frame.source} cannot be in {source.name}: "
                f"e.g. ({_xy(x, y)}): {wrong[i]}{hint}",
                option="crs",
            )
        names = axes(source)
        for i in np.flatnonzero(bad):
            if source.is_geographic:
                where = first_bad_coordinate(geoms[i], names)
            else:  # the first vertex outside the CRS's area, once in longitude/latitude
                one = geoms[i : i + 1]
                where = off_the_globe(to_storage(shapely.force_2d(one), source, SRID), source, one)[
                    0
                ]
            why = f"coordinates cannot be in {source.name}: {where or wrong[i]}"
            reject_one(unstorable, i, why)
            reject_one(reasons, i, why)
        present &= ~bad
    out = np.full(len(geoms), None, dtype=object)
    unchanged = source is None or source.is_storage(SRID)
    if present.any():
        flat = geoms[present]
        if shapely.has_z(flat).any():
            flat = shapely.force_2d(flat)
            unchanged = False
        out[present] = to_storage(flat, source, SRID) if source is not None else flat
    if source is not None and not unchanged and present.any():
        # Every vertex, once in longitude/latitude: on the globe, and (for a projected
        # CRS) within the area it is defined for.
        lost = off_the_globe(out[present], source, geoms[present])
        at = np.flatnonzero(present)[~is_none(lost)]
        for i, why in zip(at, lost[~is_none(lost)], strict=True):
            reject_one(unstorable, i, f"coordinates cannot be in {source.name}: {why}")
            reject_one(reasons, i, f"coordinates cannot be in {source.name}: {why}")
            out[i] = None
        present[at] = False
    repaired: dict[int, str] = {}
    # The common case, vectorised: already the right type, valid, not degenerate.
    types = shapely.get_type_id(out)
    simple = present & np.isin(types, SIMPLE_TYPES[kind.family])
    if unchanged and valid_as_read is not None:  # checked already, on the same geometries
        simple &= valid_as_read
    else:
        simple[simple] &= shapely.is_valid(out[simple])
    if kind.family == "polygon":
        degenerate = simple & (shapely.area(out) == 0)
    elif kind.family == "line":
        degenerate = simple & (shapely.length(out) == 0)
    else:
        degenerate = np.zeros(len(out), dtype=bool)
    for i in np.flatnonzero(degenerate):
        what = "polygon (zero area)" if kind.family == "polygon" else f"{kind.family} (zero length)"
        reject_one(reasons, i, f"degenerate {what}")
        out[i] = None
    simple &= ~degenerate
    from_file = None
    passed = np.zeros(len(out), dtype=bool)
    if frame.wkb is not None and source is not None and source.is_storage(SRID):
        # Unchanged geometries go to COPY as the file's own WKB with the SRID written in:
        # no shapely round trip, which is most of an import's time at a million features.
        from_file, passed = storage_ewkb(frame.wkb, simple, SRID)
    if kind.family == "polygon":
        singles = simple & ~passed & (types == 3)  # Polygon -> MultiPolygon, one part each
        out[singles] = shapely.multipolygons(out[singles], indices=np.arange(singles.sum()))
    # The rest one by one: repair, take parts of the right type, or reject with a reason.
    for i in np.flatnonzero(present & ~simple):
        geom, why, repair = _fit_family(kind, out[i])
        if why is not None:
            reject_one(reasons, i, why)
            out[i] = None
        else:
            out[i] = geom
            if repair is not None:
                repaired[int(i)] = repair
    return out, from_file, repaired


def _fit_family(kind: LayerKind, geom: Any) -> tuple[Any, str | None, str | None]:
    """The geometry as the layer stores it, a reason to reject it, and what was repaired."""
    repair = None
    given = geom.geom_type
    if kind.family != "point" and not shapely.is_valid(geom):
        repair = shapely.is_valid_reason(geom)
        geom = shapely.make_valid(geom)
    what = kind.noun
    if kind.family == "polygon":
        parts = _parts(geom, ("Polygon",))
        if not parts and given in ("Polygon", "MultiPolygon"):
            # Repair left lines or points of it: it enclosed nothing.
            return None, "degenerate polygon (zero area)", None
        if not parts:
            return None, f"a {geom.geom_type} cannot be {what} (it needs a polygon)", None
        result = shapely.MultiPolygon(parts)
        if result.area == 0:
            return None, "degenerate polygon (zero area)", None
        return result, None, repair
    if kind.family == "line":
        parts = _parts(geom, ("LineString",))
        if not parts:
            return None, f"a {geom.geom_type} cannot be {what} (it needs a line)", None
        merged = shapely.line_merge(shapely.MultiLineString(parts)) if len(parts) > 1 else parts[0]
        if merged.geom_type != "LineString":
            return None, f"{len(parts)} separate lines cannot be {what}", None
        if merged.length == 0:
            return None, "degenerate line (zero length)", None
        return merged, None, repair
    parts = _parts(geom, ("Point",))
    if len(parts) != 1:
        return None, f"a {geom.geom_type} cannot be {what} (it needs one point)", None
    return parts[0], None, None


def _parts(geom: Any, types: tuple[str, ...]) -> list[Any]:
    if geom.geom_type in types:
        return [geom]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _parts(g, types) if not p.is_empty]
    return []


def geometry_column(geoms: np.ndarray, from_file: pa.Array | None) -> pa.Array:
    """EWKB for every feature: made from the file's WKB, or by shapely for the rest."""
    if from_file is None:
        made = np.zeros(len(geoms), dtype=bool)
        from_file = pa.nulls(len(geoms), pa.binary())
    else:
        made = np.asarray(from_file.is_valid(), dtype=bool)
    rest = ~made & ~is_none(geoms)
    if not rest.any():
        return from_file
    encoded = pa.array(ewkb(geoms[rest]), pa.binary())
    return pc.replace_with_mask(from_file, pa.array(rest), encoded)


def widen(bounds: np.ndarray, geoms: np.ndarray) -> np.ndarray:
    """``bounds`` (xmin, ymin, xmax, ymax) grown to take in ``geoms``."""
    if not len(geoms):
        return bounds
    box = shapely.total_bounds(geoms)
    return np.concatenate([np.fmin(bounds[:2], box[:2]), np.fmax(bounds[2:], box[2:])])
