"""Coordinate reference systems, resolved once for every door: any CRS pyproj knows, by
EPSG code, OGC URI or URN, alias or WKT, and the offset systems GCJ-02 and BD-09.

GCJ-02 ("Mars coordinates", used by Amap/Tencent) and BD-09 (Baidu) are not EPSG systems
but published obfuscations of WGS 84 inside China; they are converted here both ways.
CGCS2000 (EPSG:4490) matches WGS 84 to well under a metre, so it is stored as is.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np
import pyproj
import shapely
from pyproj.exceptions import CRSError

from twin.errors import InvalidInput

# Krasovsky 1940 ellipsoid, as the GCJ-02 algorithm uses it.
_A = 6378245.0
_EE = 0.00669342162296594323
_X_PI = math.pi * 3000.0 / 180.0
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
OFFSET_SYSTEMS = {"GCJ02", "BD09"}
_ALIASES = {
    "GCJ02": "GCJ02", "GCJ-02": "GCJ02", "GCJ": "GCJ02", "MARS": "GCJ02", "AMAP": "GCJ02",
    "GAODE": "GCJ02", "TENCENT": "GCJ02", "火星坐标": "GCJ02", "高德": "GCJ02",
    "BD09": "BD09", "BD-09": "BD09", "BD09LL": "BD09", "BAIDU": "BD09", "百度": "BD09",
    "WGS84": "EPSG:4326", "WGS 84": "EPSG:4326", "CRS84": "OGC:CRS84",
    "CGCS2000": "EPSG:4490", "国家2000": "EPSG:4490",
}  # fmt: skip
# OGC's names for a CRS, as URI or URN (any case, any EPSG version): EPSG:<code> or CRS84.
_OGC_NAME = re.compile(
    r"(?:HTTPS?://WWW\.OPENGIS\.NET/DEF/CRS/|URN:OGC:DEF:CRS:)"
    r"(?:EPSG[/:][\d.]*[/:](?P<code>\d+)|OGC[/:](?:1\.3[/:])?CRS84)"
)
AREA_MARGIN = 2.0  # degrees around a CRS's area of use: data near a zone's edge is plausible


@dataclass(frozen=True)
class SourceCRS:
    """A CRS as :func:`resolve_crs` names it: a pyproj CRS, or an offset system on WGS 84,
    with what each door needs to know of it."""

    name: str  # what is recorded in the catalogue, e.g. "EPSG:4549", "OGC:CRS84" or "GCJ02"
    crs: pyproj.CRS | None  # None for the offset systems
    srid: int | None = None  # its EPSG code (4326 for CRS84); None when it has none
    lat_first: bool = False  # the authority's axis order is latitude (northing) first
    uri: str | None = None  # its OGC URI, when it has one

    @property
    def is_offset(self) -> bool:
        """Whether this is GCJ-02 or BD-09: longitude/latitude shifted from WGS 84."""
        return self.crs is None

    def is_storage(self, srid: int) -> bool:
        """Whether coordinates in this CRS (x first) need no change to be stored in ``srid``."""
        return self.crs is not None and _pyproj_function(self.crs, srid) is None

    @property
    def is_geographic(self) -> bool:
        """Whether coordinates are longitude/latitude degrees."""
        return self.crs is None or self.crs.is_geographic


def resolve_crs(text: str | int | pyproj.CRS, option: str | None = None) -> SourceCRS:
    """The CRS named by an EPSG code (4549, EPSG:4490), an OGC URI or URN
    (http://www.opengis.net/def/crs/EPSG/0/4326, urn:ogc:def:crs:EPSG::4326, CRS84), an
    alias (CGCS2000, WGS84, GCJ-02, BD-09, 百度 …), WKT or PROJ text. Every door reads a
    CRS with this; InvalidInput naming the text when no CRS has that name, with
    ``option`` (the input it came in, e.g. "crs") for each door to word its hint."""
    if isinstance(text, pyproj.CRS):
        return _from_pyproj(text)
    raw = str(text).strip()
    try:
        return _resolved(raw)
    except CRSError:
        raise InvalidInput(
            f"unknown CRS {raw[:80]!r}: give an EPSG code (e.g. EPSG:4490), GCJ02 or BD09",
            option=option,
        ) from None


@functools.lru_cache(maxsize=256)
def _resolved(raw: str) -> SourceCRS:
    """``raw`` resolved (cached: the spatial questions and the feature API ask per request)."""
    upper = raw.upper()
    alias = _ALIASES.get(upper, _ALIASES.get(raw))
    if alias in OFFSET_SYSTEMS:
        return SourceCRS(alias, None)
    ogc = _OGC_NAME.fullmatch(upper)
    if ogc:
        alias = f"EPSG:{ogc['code']}" if ogc["code"] else "OGC:CRS84"
    elif raw.isdigit():
        alias = f"EPSG:{raw}"
    return _from_pyproj(pyproj.CRS.from_user_input(alias or raw))


def _from_pyproj(crs: pyproj.CRS) -> SourceCRS:
    authority = crs.to_authority(min_confidence=90)
    name = f"{authority[0]}:{authority[1]}" if authority else crs.name
    srid = uri = None
    if name == "OGC:CRS84":
        srid, uri = 4326, CRS84
    elif authority and authority[0] == "EPSG" and authority[1].isdigit():
        srid = int(authority[1])
        uri = f"http://www.opengis.net/def/crs/EPSG/0/{srid}"
    lat_first = bool(crs.axis_info) and crs.axis_info[0].direction in ("north", "south")
    return SourceCRS(name, crs, srid, lat_first, uri)


# -- the offset systems --------------------------------------------------------------------


def outside_china(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Where the offsets do not apply (the published rough box around China)."""
    return (lon < 72.004) | (lon > 137.8347) | (lat < 0.8293) | (lat > 55.8271)


def _offset(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = lon - 105.0, lat - 35.0
    dlat = (
        -100.0
        + 2.0 * x
        + 3.0 * y
        + 0.2 * y * y
        + 0.1 * x * y
        + 0.2 * np.sqrt(np.abs(x))
        + (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
        + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
        + (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    )
    dlon = (
        300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
        + (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
        + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
        + (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    )  # fmt: skip
    rad = lat / 180.0 * np.pi
    magic = 1 - _EE * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrt_magic) * np.pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * np.cos(rad) * np.pi)
    outside = outside_china(lon, lat)
    return np.where(outside, 0.0, dlon), np.where(outside, 0.0, dlat)


def wgs84_to_gcj02(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WGS 84 to GCJ-02 (no change outside China)."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    dlon, dlat = _offset(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_wgs84(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 to WGS 84, by fixed-point iteration to about 1e-9 degrees (0.1 mm)."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    wlon, wlat = lon.copy(), lat.copy()
    for _ in range(30):
        glon, glat = wgs84_to_gcj02(wlon, wlat)
        dlon, dlat = glon - lon, glat - lat
        wlon, wlat = wlon - dlon, wlat - dlat
        if np.all(np.abs(dlon) < 1e-10) and np.all(np.abs(dlat) < 1e-10):
            break
    return wlon, wlat


def gcj02_to_bd09(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 to BD-09."""
    x, y = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    z = np.sqrt(x * x + y * y) + 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) + 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def bd09_to_gcj02(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BD-09 to GCJ-02."""
    x = np.asarray(lon, dtype=float) - 0.0065
    y = np.asarray(lat, dtype=float) - 0.006
    z = np.sqrt(x * x + y * y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta), z * np.sin(theta)


def bd09_to_wgs84(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BD-09 to WGS 84."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))


def wgs84_to_bd09(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WGS 84 to BD-09."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


# -- geometries ------------------------------------------------------------------------------


def _coordinate_function(source: SourceCRS, target_srid: int):  # noqa: ANN202
    """A vectorised (N, 2) -> (N, 2) function from ``source`` to the storage CRS."""
    if source.crs is None:
        to_wgs84 = gcj02_to_wgs84 if source.name == "GCJ02" else bd09_to_wgs84
        then = _pyproj_function(pyproj.CRS.from_epsg(4326), target_srid)

        def offset(coords: np.ndarray) -> np.ndarray:
            lon, lat = to_wgs84(coords[:, 0], coords[:, 1])
            wgs84 = np.column_stack([lon, lat])
            return wgs84 if then is None else then(wgs84)

        return offset
    return _pyproj_function(source.crs, target_srid)


def _pyproj_function(crs: pyproj.CRS, target_srid: int):  # noqa: ANN202
    """A vectorised coordinate function, or None when the CRS is the target already."""
    target = pyproj.CRS.from_epsg(target_srid)
    if crs == target or (crs.is_geographic and crs.equals(target, ignore_axis_order=True)):
        return None  # nothing to do
    transformer = pyproj.Transformer.from_crs(crs, target, always_xy=True)

    def transform(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1], errcheck=False)
        return np.column_stack([x, y])

    return transform


def to_storage(geoms: np.ndarray, source: SourceCRS, target_srid: int = 4326) -> np.ndarray:
    """Geometries from ``source`` into the storage CRS."""
    function = _coordinate_function(source, target_srid)
    geoms = np.asarray(geoms, dtype=object)
    return geoms if function is None else shapely.transform(geoms, function)


def from_storage(geoms: np.ndarray, target: str, storage_srid: int = 4326) -> np.ndarray:
    """Geometries from the storage CRS into ``target`` (an EPSG code, GCJ02 or BD09)."""
    wanted = resolve_crs(target)
    if wanted.crs is None:
        to_offset = wgs84_to_gcj02 if wanted.name == "GCJ02" else wgs84_to_bd09

        def offset(coords: np.ndarray) -> np.ndarray:
            return np.column_stack(to_offset(coords[:, 0], coords[:, 1]))

        return shapely.transform(np.asarray(geoms, dtype=object), offset)
    transformer = pyproj.Transformer.from_crs(
        pyproj.CRS.from_epsg(storage_srid), wanted.crs, always_xy=True
    )

    def project(coords: np.ndarray) -> np.ndarray:
        return np.column_stack(transformer.transform(coords[:, 0], coords[:, 1]))

    return shapely.transform(np.asarray(geoms, dtype=object), project)


def coordinate_bounds(geoms: np.ndarray) -> np.ndarray:
    """West, south, east, north over every coordinate of each geometry, holes and parts
    included, NaN where it has none: GEOS's envelope of a polygon is its shell's alone, and
    a hole can lie outside it (latitude 95 in a hole went unseen)."""
    geoms = np.asarray(geoms, dtype=object)
    bounds = np.full((len(geoms), 4), np.nan)
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    if len(coords):
        which, starts = np.unique(index, return_index=True)
        bounds[which, :2] = np.minimum.reduceat(coords, starts, axis=0)
        bounds[which, 2:] = np.maximum.reduceat(coords, starts, axis=0)
    return bounds


def _present_bounds(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For an array of geometries: a reason per geometry (all None yet), which are present
    (neither missing nor empty), and the coordinate bounds of those."""
    present = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    reasons = np.full(len(geoms), None, dtype=object)
    return reasons, present, coordinate_bounds(geoms[present])


def area_of_use(source: SourceCRS) -> pyproj.aoi.AreaOfUse | None:
    """The area a projected ``source`` is defined for, when coordinates can be held against
    it: None for degrees, the offset systems, and areas across the antimeridian."""
    if source.crs is None or source.is_geographic:
        return None
    area = source.crs.area_of_use
    return area if area is not None and area.west <= area.east else None


def in_area(lon: np.ndarray, lat: np.ndarray, area: pyproj.aoi.AreaOfUse) -> np.ndarray:
    """Where longitude/latitude lie within ``area`` give or take AREA_MARGIN (never NaN)."""
    m = AREA_MARGIN
    return (
        (lon >= area.west - m)
        & (lon <= area.east + m)
        & (lat >= area.south - m)
        & (lat <= area.north + m)
    )


def implausible(geoms: np.ndarray, source: SourceCRS) -> np.ndarray:
    """For each geometry, why its coordinates cannot be in ``source`` (or None if they can).

    Degrees beyond ±180/±90 cannot be longitude/latitude; projected coordinates that fall
    far outside the CRS's area of use were probably declared in the wrong CRS.
    """
    geoms = np.asarray(geoms, dtype=object)
    reasons, present, bounds = _present_bounds(geoms)
    if not present.any():
        return reasons
    xmin, ymin, xmax, ymax = bounds.T
    found = np.full(present.sum(), None, dtype=object)
    if source.is_geographic:
        bad_lat = (ymin < -90) | (ymax > 90)
        bad_lon = (xmin < -180) | (xmax > 180)
        found[bad_lon] = "longitude beyond ±180"
        found[bad_lat] = "latitude beyond ±90"
    elif (area := area_of_use(source)) is not None:
        to_lonlat = pyproj.Transformer.from_crs(source.crs, 4326, always_xy=True)
        cx, cy = to_lonlat.transform((xmin + xmax) / 2, (ymin + ymax) / 2, errcheck=False)
        found[~in_area(cx, cy, area)] = f"outside the area where it is used ({area.name})"
    reasons[present] = found
    return reasons


# -- one coordinate at a time: what is wrong with it, and where it is ----------------------


def axes(source: SourceCRS | None) -> tuple[str, str]:
    """What a person calls a CRS's two axes: longitude/latitude, or x/y."""
    return ("longitude", "latitude") if source is None or source.is_geographic else ("x", "y")


def number_text(value: float) -> str:
    """A coordinate as a person reads it: NaN, inf, or a number without noise."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value.is_integer() and abs(value) < 1e15:  # metres, as written: 500000000000
        return str(int(value))
    return f"{value:.10g}"


def position(geom: shapely.Geometry, k: int) -> str:
    """Where the ``k``-th coordinate of ``geom`` (in shapely's order) is, in a person's
    words: "the point", "coordinate 3", "coordinate 1 of ring 0 of part 2" …"""
    where, _ = _position(geom, k)
    return where or "the point"


def _position(geom: shapely.Geometry, k: int) -> tuple[str | None, int]:
    """(where, coordinates left) after looking for the ``k``-th coordinate in ``geom``."""
    kind = geom.geom_type
    if kind == "Point":
        return (None, -1) if k == 0 else (None, k - (0 if geom.is_empty else 1))
    if kind in ("LineString", "LinearRing"):
        n = len(geom.coords)
        return (f"coordinate {k}", -1) if k < n else (None, k - n)
    if kind == "Polygon":
        rings = [] if geom.is_empty else [geom.exterior, *geom.interiors]
        for r, ring in enumerate(rings):
            n = len(ring.coords)
            if k < n:
                hole = " (a hole)" if r else ""
                return f"coordinate {k} of ring {r}{hole}", -1
            k -= n
        return None, k
    word = "member" if kind == "GeometryCollection" else "part"
    for p, part in enumerate(geom.geoms):
        where, left = _position(part, k)
        if left < 0:
            inner = f"{where} of " if where else ""
            return f"{inner}{word} {p}", -1
        k = left
    return None, k


_DEGREES = np.array([180.0, 90.0])  # the largest longitude and latitude


def _fitting(coords: np.ndarray, in_degrees: bool) -> np.ndarray:
    """For each value of (…, 2) coordinates, whether it can be stored: a finite number, and
    within ±180 (x) or ±90 (y) when ``in_degrees``."""
    finite = np.isfinite(coords)
    return finite & (np.abs(coords) <= _DEGREES) if in_degrees else finite


def coordinate_fault(
    x: float,
    y: float,
    names: tuple[str, str] = ("longitude", "latitude"),
    *,
    in_degrees: bool = True,
) -> str | None:
    """What is wrong with one coordinate pair, in words: "latitude 95 is beyond ±90",
    "longitude NaN is not a number"; None if it fits (as :func:`first_bad_coordinate`)."""
    pair = np.array([x, y], dtype=float)
    fits = _fitting(pair, in_degrees)
    if fits.all():
        return None
    axis = int(np.flatnonzero(~fits)[0])
    value = float(pair[axis])
    if math.isnan(value):
        problem = "is not a number"
    elif math.isinf(value):
        problem = "is not a finite number"
    else:
        problem = f"is beyond ±{_DEGREES[axis]:.0f}"
    return f"{names[axis]} {number_text(value)} {problem}"


def first_bad_coordinate(
    geom: shapely.Geometry,
    names: tuple[str, str] = ("longitude", "latitude"),
    *,
    in_degrees: bool = True,
) -> str | None:
    """What is wrong with the first coordinate of ``geom`` that cannot be stored, and where
    it is: "coordinate 1 of ring 0: longitude NaN is not a number". Not-a-number and
    infinite values always; beyond ±180/±90 too when ``in_degrees`` (longitude/latitude).
    ``names`` are the axes' names. None if every coordinate fits."""
    coords = shapely.get_coordinates(geom)
    bad = np.flatnonzero(~_fitting(coords, in_degrees).all(axis=1))
    if not len(bad):
        return None
    k = int(bad[0])
    fault = coordinate_fault(*coords[k], names, in_degrees=in_degrees)
    return f"{position(geom, k)}: {fault}"


def non_finite(geoms: np.ndarray, source: SourceCRS | None, valid: np.ndarray) -> np.ndarray:
    """For each geometry, its first coordinate that is not a finite number (NaN, ±inf),
    where it is, or None. GEOS finds geometries with such coordinates invalid, so only
    those ``valid`` says are not are looked at one by one."""
    geoms = np.asarray(geoms, dtype=object)
    reasons = np.full(len(geoms), None, dtype=object)
    names = axes(source)
    for i in np.flatnonzero(~np.asarray(valid, dtype=bool)):
        geom = geoms[i]
        if geom is not None and not geom.is_empty:
            # Only whether they are numbers here: ranges are the CRS's, checked after.
            reasons[i] = first_bad_coordinate(geom, names, in_degrees=False)
    return reasons


def off_the_globe(stored: np.ndarray, source: SourceCRS, given: np.ndarray) -> np.ndarray:
    """For each geometry converted to the storage CRS (longitude/latitude), why it cannot
    be stored, naming its first coordinate that lands beyond ±180/±90 or on no number, or
    that lies outside the area where a projected ``source`` is defined; None where all
    fit. ``given`` are the geometries as the file had them (for the position's words)."""
    stored = np.asarray(stored, dtype=object)
    reasons, present, bounds = _present_bounds(stored)
    if not present.any():
        return reasons
    west, south, east, north = bounds.T
    outside = ~np.isfinite(bounds).all(axis=1)
    outside |= (west < -180) | (east > 180) | (south < -90) | (north > 90)
    area = area_of_use(source)
    if area is not None:
        outside |= ~in_area(west, south, area) | ~in_area(east, north, area)
    found = np.full(present.sum(), None, dtype=object)
    rows = np.flatnonzero(present)
    for j in np.flatnonzero(outside):
        i = int(rows[j])
        found[j] = _off_the_globe(stored[i], given[i], source, area)
    reasons[present] = found
    return reasons


def _off_the_globe(
    stored: shapely.Geometry,
    given: shapely.Geometry,
    source: SourceCRS,
    area: pyproj.aoi.AreaOfUse | None,
) -> str:
    coords = shapely.get_coordinates(stored)
    original = shapely.get_coordinates(given)
    fits = _fitting(coords, in_degrees=True).all(axis=1)
    if area is not None:
        fits &= in_area(coords[:, 0], coords[:, 1], area)
    k = int(np.flatnonzero(~fits)[0]) if (~fits).any() else 0
    x, y = (original[k] if k < len(original) else coords[k]).tolist()
    names = axes(source)
    where = position(given, k) if k < len(original) else position(stored, k)
    said = f"{names[0]} {number_text(x)}, {names[1]} {number_text(y)}"
    if area is not None and np.isfinite(coords[k]).all():
        return f"{where}: {said} lies outside the area where {source.name} is used ({area.name})"
    return f"{where}: {said} is not on the globe in {source.name}"


def point_to_storage(
    x: float,
    y: float,
    crs: str | None,
    *,
    option: str,
    crs_option: str | None = None,
    srid: int = 4326,
) -> tuple[float, float]:
    """One point given in ``crs`` (None: longitude/latitude as stored; any CRS
    ``resolve_crs`` reads, GCJ-02 and BD-09 included) as longitude and latitude in the
    storage CRS: the one conversion of a single point, for every door that takes one.
    InvalidInput (``crs_option``, by default ``option``) for a CRS not known, (``option``)
    for a point that cannot be in that CRS, e.g. degrees sent
    as a projected CRS (they would land thousands of kilometres away)."""
    if not (math.isfinite(x) and math.isfinite(y)):
        raise InvalidInput("the point's coordinates must be finite numbers", option=option)
    if crs is None:
        return x, y
    source = resolve_crs(crs, crs_option or option)
    if source.is_storage(srid):
        return x, y
    given = np.array([shapely.Point(x, y)], dtype=object)
    wrong = implausible(given, source)[0]
    if wrong is not None:
        hint = " (are these degrees? then leave crs out)" if abs(x) <= 180 and abs(y) <= 90 else ""
        raise InvalidInput(f"the point {x:g}, {y:g} cannot be in {source.name}: {wrong}{hint}",
                           option=option)  # fmt: skip
    point = to_storage(given, source, srid)[0]
    if not (math.isfinite(point.x) and math.isfinite(point.y)):
        raise InvalidInput(f"the point {x:g}, {y:g} lies beyond the range of {source.name}",
                           option=option)  # fmt: skip
    return float(point.x), float(point.y)
