"""Messy values and coordinate systems, checked against published reference points."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from layers.values import parse_diameter_mm, parse_floors, parse_length_m, parse_number
from twin import crs
from twin.errors import InvalidInput


@pytest.mark.parametrize(
    ("raw", "metres"),
    [("12.13 m", 12.13), ("12,5", 12.5), ("约12米", 12.0), ("1213 cm", 12.13),
     ("40 ft", 12.192), (7, 7.0), ("1,234.5", 1234.5), ("1.234,5", 1234.5)],
)  # fmt: skip
def test_lengths_as_they_come(raw, metres):
    assert parse_length_m(raw) == pytest.approx(metres)


@pytest.mark.parametrize(
    ("raw", "mm"),
    [("DN300", 300), ("300mm", 300), ("0.3 m", 300), ("Φ300", 300), ("De110", 110),
     ("DN 150", 150), (0.3, 300), (600, 600), ('12"', 304.8)],
)  # fmt: skip
def test_diameters_as_they_come(raw, mm):
    assert parse_diameter_mm(raw) == pytest.approx(mm)


@pytest.mark.parametrize("raw", ["3 floors", "3F", "3层", "地上3层", "3.0", 3, "3 storeys"])
def test_floors_as_they_come(raw):
    assert parse_floors(raw) == 3


@pytest.mark.parametrize("raw", ["abc", "12 parsecs", "", "nan"])
def test_unreadable_lengths_say_why(raw):
    with pytest.raises(ValueError, match=r"length|unit|number"):
        parse_length_m(raw)


def test_non_finite_numbers_are_refused():
    with pytest.raises(ValueError, match="finite"):
        parse_number(float("inf"))


# Published test points: eviltransform (WGS 84 -> GCJ-02) and coordtransform (BD-09).
GCJ_REFERENCE = [
    # wgs lon, wgs lat, gcj lon, gcj lat
    (121.5272106, 31.1774276, 121.531541859215, 31.17530398364597),  # Shanghai
    (113.912316, 22.543847, 113.9171764808363, 22.540796131694766),  # Shenzhen
    (116.377817, 39.911954, 116.38404722455657, 39.91334545536069),  # Beijing
    (116.404, 39.915, 116.41024449916938, 39.91640428150164),
]


@pytest.mark.parametrize(("lon", "lat", "glon", "glat"), GCJ_REFERENCE)
def test_gcj02_matches_published_points_both_ways(lon, lat, glon, glat):
    assert np.allclose(crs.wgs84_to_gcj02(lon, lat), (glon, glat), atol=1e-9)
    assert np.allclose(crs.gcj02_to_wgs84(glon, glat), (lon, lat), atol=1e-8)


def test_bd09_matches_published_points_both_ways():
    assert np.allclose(
        crs.gcj02_to_bd09(116.404, 39.915), (116.41036949371029, 39.92133699351021), atol=1e-9
    )
    assert np.allclose(
        crs.bd09_to_gcj02(116.404, 39.915), (116.39762729119315, 39.90865673957631), atol=1e-9
    )
    lon, lat = crs.bd09_to_wgs84(*crs.wgs84_to_bd09(121.4, 31.24))
    assert np.allclose((lon, lat), (121.4, 31.24), atol=1e-8)


def test_offsets_do_not_apply_outside_china():
    assert np.allclose(crs.wgs84_to_gcj02(-0.1276, 51.5072), (-0.1276, 51.5072))


def test_gauss_kruger_zone_to_storage_matches_proj():
    # A point in Shanghai in CGCS2000 3-degree GK CM 120E, and the same with zone prefix (40).
    point = shapely.Point(121.4, 31.24)
    gk = crs.from_storage(np.array([point]), "EPSG:4549")[0]
    assert 630_000 < gk.x < 640_000 and 3_450_000 < gk.y < 3_470_000
    back = crs.to_storage(np.array([gk]), crs.resolve_crs("EPSG:4549"))[0]
    assert back.distance(point) < 1e-8
    prefixed = shapely.Point(40_000_000 + gk.x, gk.y)
    back = crs.to_storage(np.array([prefixed]), crs.resolve_crs("EPSG:4528"))[0]
    assert back.distance(point) < 1e-8


def test_cgcs2000_and_aliases_resolve():
    assert crs.resolve_crs("CGCS2000").name == "EPSG:4490"
    assert crs.resolve_crs("4490").name == "EPSG:4490"
    assert crs.resolve_crs("gcj-02").name == "GCJ02"
    assert crs.resolve_crs("百度").name == "BD09"
    with pytest.raises(InvalidInput, match="unknown CRS 'EPSG:999999'"):
        crs.resolve_crs("EPSG:999999")


def test_coordinates_that_cannot_be_in_the_stated_crs_are_named():
    wgs84 = crs.resolve_crs("EPSG:4326")
    reasons = crs.implausible(
        np.array(
            [shapely.Point(121.4, 31.2), shapely.Point(121.4, 95), shapely.Point(538000, 3457000)]
        ),
        wgs84,
    )
    assert reasons[0] is None
    assert "latitude beyond ±90" in reasons[1] and reasons[2] is not None
    gk = crs.resolve_crs("EPSG:4549")
    # Degrees declared as Gauss-Krüger metres land near the equator, far from the zone.
    assert "outside the area" in crs.implausible(np.array([shapely.Point(121.4, 31.2)]), gk)[0]


# -- one resolver: every form a door accepts names the same CRS --------------------------------

FORMS = {
    "EPSG:4326": ["4326", 4326, "epsg:4326", " EPSG:4326 ", "WGS84",
                  "http://www.opengis.net/def/crs/EPSG/0/4326", "urn:ogc:def:crs:EPSG::4326",
                  "URN:OGC:DEF:CRS:EPSG:9.8.15:4326", "HTTP://WWW.OPENGIS.NET/DEF/CRS/EPSG/0/4326"],
    "OGC:CRS84": ["CRS84", "crs84", "OGC:CRS84", "urn:ogc:def:crs:OGC:1.3:CRS84",
                  "http://www.opengis.net/def/crs/OGC/1.3/CRS84"],
    "EPSG:4490": ["4490", "CGCS2000", "国家2000", "urn:ogc:def:crs:EPSG::4490"],
    "EPSG:4549": ["4549", "epsg:4549", "http://www.opengis.net/def/crs/EPSG/0/4549"],
    "EPSG:3857": ["3857", "urn:ogc:def:crs:EPSG::3857"],
    "GCJ02": ["gcj-02", "GCJ", "Mars", "AMAP", "火星坐标", "高德"],
    "BD09": ["bd-09", "BD09LL", "baidu", "百度"],
}  # fmt: skip


@pytest.mark.parametrize(("name", "form"), [(n, f) for n, fs in FORMS.items() for f in fs])
def test_every_accepted_form_resolves_to_the_same_crs(name, form):
    assert crs.resolve_crs(form) == crs.resolve_crs(name)
    assert crs.resolve_crs(form).name == name


@pytest.mark.parametrize(
    ("name", "srid", "lat_first", "uri"),
    [
        ("EPSG:4326", 4326, True, "http://www.opengis.net/def/crs/EPSG/0/4326"),
        ("CRS84", 4326, False, "http://www.opengis.net/def/crs/OGC/1.3/CRS84"),
        ("EPSG:4490", 4490, True, "http://www.opengis.net/def/crs/EPSG/0/4490"),
        # Gauss-Krüger: EPSG gives northing first (surveyors' X is north)
        ("EPSG:4549", 4549, True, "http://www.opengis.net/def/crs/EPSG/0/4549"),
        ("EPSG:3857", 3857, False, "http://www.opengis.net/def/crs/EPSG/0/3857"),
    ],
)
def test_the_answer_has_srid_axis_order_and_uri(name, srid, lat_first, uri):
    found = crs.resolve_crs(name)
    assert (found.srid, found.lat_first, found.uri, found.is_offset) == (
        srid,
        lat_first,
        uri,
        False,
    )
    assert crs.resolve_crs(uri) == found  # the URI it gives is read back as itself


@pytest.mark.parametrize("name", ["GCJ02", "BD09"])
def test_an_offset_system_is_recognised_as_one(name):
    found = crs.resolve_crs(name)
    assert found.is_offset and found.is_geographic
    assert (found.srid, found.uri, found.crs) == (None, None, None)


@pytest.mark.parametrize(
    "text",
    ["nonsense", "EPSG:999999", "urn:ogc:def:crs:EPSG::999999", "http://example.com/crs/1", ""],
)
def test_an_unknown_crs_is_refused_naming_the_input(text):
    with pytest.raises(InvalidInput, match=f"unknown CRS {text!r}: give an EPSG code"):
        crs.resolve_crs(text)
    with pytest.raises(InvalidInput, match=f"^unknown CRS {text!r}") as refused:
        crs.resolve_crs(text, "crs")
    assert refused.value.option == "crs"
