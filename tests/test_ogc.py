"""OGC API Features through the real app, and through real clients: GDAL and OWSLib."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.helpers import make_data_dir, serve_app, settings_for
from twin.features import CRS84

EPSG4326 = "http://www.opengis.net/def/crs/EPSG/0/4326"
LAYERS = ("buildings", "public_spaces", "pipes", "pipe_nodes", "sensors", "jurisdictions", "units")


def test_landing_conformance_and_collections(client: TestClient):
    links = {link["rel"] for link in client.get("/").json()["links"]}
    assert {"service-desc", "conformance", "data"} <= links
    conforms = client.get("/conformance").json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in conforms
    assert "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text" in conforms
    assert client.get("/api").json()["openapi"].startswith("3.")
    ids = {c["id"] for c in client.get("/collections").json()["collections"]}
    assert set(LAYERS) <= ids
    one = client.get("/collections/buildings").json()
    assert one["extent"]["spatial"]["bbox"][0][0] > 121 and EPSG4326 in one["crs"]


def test_items_page_through_every_building_once(client: TestClient, conn: psycopg.Connection):
    total = conn.execute("SELECT count(*) FROM buildings").fetchone()[0]
    seen: list[str] = []
    url = "/collections/buildings/items?limit=1000&properties=height_m"
    while url:
        page = client.get(url).json()
        assert page["numberMatched"] == total
        seen += [f["id"] for f in page["features"]]
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
    assert len(seen) == len(set(seen)) == total


def test_bbox_sortby_properties_and_equality(client: TestClient, conn: psycopg.Connection):
    west, south, east, north = 121.395, 31.235, 121.405, 31.245
    expected = conn.execute(
        "SELECT count(*) FROM buildings WHERE ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))",
        (west, south, east, north),
    ).fetchone()[0]
    page = client.get(
        f"/collections/buildings/items?bbox={west},{south},{east},{north}&limit=5"
        "&sortby=-height_m&properties=height_m,use"
    ).json()
    assert page["numberMatched"] == expected > 5
    heights = [f["properties"]["height_m"] for f in page["features"]]
    assert heights == sorted(heights, reverse=True)
    assert set(page["features"][0]["properties"]) == {"height_m", "use"}
    tall = client.get("/collections/buildings/items?floors=6&limit=1").json()
    assert (
        tall["numberMatched"]
        == conn.execute("SELECT count(*) FROM buildings WHERE floors = 6").fetchone()[0]
        > 0
    )
    offline = client.get("/collections/sensors/items?online=false").json()["numberMatched"]
    assert offline == conn.execute("SELECT count(*) FROM sensors WHERE NOT online").fetchone()[0]
    smoke = client.get("/collections/sensors/items?kind=smoke&limit=3").json()
    assert smoke["numberMatched"] > 0 and {f["properties"]["kind"] for f in smoke["features"]} == {
        "smoke"
    }


def test_cql2_text_and_json_filters(client: TestClient, conn: psycopg.Connection):
    expected = conn.execute(
        "SELECT count(*) FROM buildings WHERE height_m > 50 AND use IN ('office', 'commercial')"
    ).fetchone()[0]
    text = quote("height_m > 50 AND use IN ('office','commercial')")
    assert (
        client.get(f"/collections/buildings/items?filter={text}").json()["numberMatched"]
        == expected
    )
    cql_json = {"op": "and", "args": [
        {"op": ">", "args": [{"property": "height_m"}, 50]},
        {"op": "in", "args": [{"property": "use"}, ["office", "commercial"]]}]}  # fmt: skip
    answer = client.get(
        f"/collections/buildings/items?filter-lang=cql2-json&filter={quote(json.dumps(cql_json))}"
    ).json()
    assert answer["numberMatched"] == expected
    spatial = quote(
        "S_INTERSECTS(geometry, POLYGON((121.39 31.23, 121.41 31.23, 121.41 31.25, 121.39 31.25, 121.39 31.23)))"
    )
    inside = client.get(f"/collections/sensors/items?filter={spatial}").json()["numberMatched"]
    assert 0 < inside < conn.execute("SELECT count(*) FROM sensors").fetchone()[0]
    between = quote("floors BETWEEN 3 AND 6 AND NOT name IS NULL AND address LIKE '%号'")
    assert client.get(f"/collections/buildings/items?filter={between}").status_code == 200


def test_output_crs_flips_axes_for_epsg_4326(client: TestClient):
    url = "/collections/sensors/items?limit=1&sortby=id"
    lon_lat = client.get(url).json()["features"][0]["geometry"]["coordinates"]
    answer = client.get(f"{url}&crs={EPSG4326}")
    assert answer.headers["content-crs"] == f"<{EPSG4326}>"
    assert answer.json()["features"][0]["geometry"]["coordinates"] == lon_lat[::-1]
    metric = client.get(f"{url}&crs=http://www.opengis.net/def/crs/EPSG/0/4549").json()
    northing, easting = metric["features"][0]["geometry"]["coordinates"]  # EPSG axis order
    assert 600_000 < easting < 700_000 and 3_400_000 < northing < 3_500_000
    assert "crs" not in metric["features"][0]["geometry"]


def test_one_feature_and_queryables(client: TestClient):
    first = client.get("/collections/jurisdictions/items?limit=1&level=district").json()[
        "features"
    ][0]
    one = client.get(f"/collections/jurisdictions/items/{first['id']}")
    assert one.status_code == 200 and one.json()["properties"]["level"] == "district"
    queryables = client.get("/collections/buildings/queryables").json()["properties"]
    assert queryables["height_m"]["type"] == "number" and "geom" not in queryables
    html = client.get("/collections/buildings/items?f=html&limit=3")
    assert html.status_code == 200 and "<table>" in html.text and ">None<" not in html.text
    for url in ("/conformance", "/collections/buildings", "/collections/buildings/queryables"):
        page = client.get(f"{url}?f=html")
        assert page.headers["content-type"].startswith("text/html"), url


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        ("/collections/castles/items", 404, "castles"),
        ("/collections/buildings/items/999999999", 404, "999999999"),
        ("/collections/buildings/items/1;DROP TABLE buildings", 404, "no feature"),
        ("/collections/buildings/items?bbox=121,31,NaN,32", 400, "finite"),
        ("/collections/buildings/items?bbox=121,31,inf,32", 400, "finite"),
        ("/collections/buildings/items?bbox=121,31,1e999,32", 400, "finite"),
        ("/collections/buildings/items?bbox=31,121,32,122", 400, "latitudes"),
        ("/collections/buildings/items?bbox=121,31,122", 400, "four"),
        ("/collections/buildings/items?limit=1e9", 400, "is not an integer"),
        ("/collections/buildings/items?limit=-5", 400, "limit"),
        ("/collections/buildings/items?offset=-1", 400, "offset"),
        ("/collections/buildings/items?crs=EPSG:9999", 400, "not supported"),
        ("/collections/buildings/items?sortby=height_m;DROP TABLE x", 400, "queryable"),
        ("/collections/buildings/items?properties=password", 400, "password"),
        ("/collections/buildings/items?colour=red", 400, "colour"),
        ("/collections/buildings/items?floors=abc", 400, "floors is an integer"),
        ("/collections/buildings/items?height_m=NaN", 400, "height_m is a number"),
        ("/collections/sensors/items?online=maybe", 400, "true or false"),
        ("/collections/buildings/items?filter=height_m >", 400, "cql2-text"),
        ("/collections/buildings/items?filter=secret = 1", 400, "secret"),
        (
            "/collections/buildings/items?filter=name = 'x OR 1=1; DROP TABLE buildings; --'",
            200,
            "",
        ),
        ("/collections/buildings/items?filter=name LIKE '%25'';--'", 200, ""),  # '' is a quote
        ("/collections/buildings/items?filter-lang=cql2-json&filter={bad", 400, "cql2-json"),
        ("/collections/buildings/items?datetime=yesterday", 400, "RFC 3339"),
        ("/collections/buildings/items?filter=height_m > 'abc'", 400, "height_m is a number"),
        ("/collections/buildings/items?filter=name > 5", 400, "name is a string"),
        ("/collections/buildings/items?filter=floors IN ('a')", 400, "floors is an integer"),
        ("/collections/buildings/items?filter=geometry = 1", 400, "S_INTERSECTS"),
        ("/collections/buildings/items?filter=pg_sleep(10) = 1", 400, "pg_sleep"),
        ("/collections/buildings/items?filter=name LIKE '\\'", 400, "backslash"),
        (
            "/collections/buildings/items?filter=S_INTERSECTS(geometry, POLYGON((0 0, 1 1)))",
            400,
            "geometry",
        ),
        (
            "/collections/buildings/items?bbox=-1e30,-1e30,1e30,1e30&bbox-crs=http://www.opengis.net/def/crs/EPSG/0/4549",
            400,
            "range",
        ),
    ],
)
def test_bad_requests_are_problems_never_500(client: TestClient, url: str, status: int, words: str):
    answer = client.get(url)
    assert answer.status_code == status, answer.text
    if status != 200:
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert words in answer.json()["detail"]
        assert "psycopg" not in answer.text and "SELECT" not in answer.text


def test_a_filter_of_many_terms_is_a_400_not_a_crash(client: TestClient):
    many = quote(" OR ".join(f"id = {i}" for i in range(600)))
    answer = client.get(f"/collections/buildings/items?filter={many}")
    assert answer.status_code in (200, 400)
    if answer.status_code == 400:
        assert "too many terms" in answer.json()["detail"]


def test_cql2_json_bbox_matches_the_text_form(client: TestClient):
    text = quote("S_INTERSECTS(geometry, BBOX(121.39, 31.23, 121.40, 31.24))")
    as_json = quote(json.dumps({"op": "s_intersects", "args": [{"property": "geometry"},
                                {"bbox": [121.39, 31.23, 121.40, 31.24]}]}))  # fmt: skip
    by_text = client.get(f"/collections/buildings/items?filter={text}").json()["numberMatched"]
    by_json = client.get(
        f"/collections/buildings/items?filter-lang=cql2-json&filter={as_json}"
    ).json()["numberMatched"]
    assert by_text == by_json > 0


def test_whole_doubles_stay_decimals_for_type_guessing_clients(client: TestClient):
    answer = client.get(
        "/collections/sensors/items?limit=50&properties=threshold_high&filter=threshold_high IS NOT NULL"
    )
    text = answer.text
    values = [f["properties"]["threshold_high"] for f in answer.json()["features"]]
    assert values and all(isinstance(v, float) for v in values)
    assert '"threshold_high":150,' not in text.replace(" ", "")


def test_limit_above_the_maximum_is_clamped(client: TestClient):
    page = client.get("/collections/sensors/items?limit=50000").json()
    assert page["numberReturned"] == min(10_000, page["numberMatched"])


def test_antimeridian_bbox_is_answered(client: TestClient):
    answer = client.get("/collections/buildings/items?bbox=170,-10,-170,10")
    assert answer.status_code == 200 and answer.json()["numberMatched"] == 0
    wide = client.get("/collections/buildings/items?bbox=121,-10,-170,40&limit=1")
    assert wide.json()["numberMatched"] > 0  # 121E eastward across 180 to 170W holds Shanghai


# -- real clients over real HTTP ---------------------------------------------------------------


@pytest.fixture(scope="module")
def live_url(demo_url: str) -> Iterator[str]:
    """The app served by uvicorn on a local port, for clients that speak HTTP themselves."""
    app = create_app(settings_for(make_data_dir("twin-live-")), database_url=demo_url)
    with serve_app(app) as base:
        yield base


@pytest.mark.skipif(shutil.which("ogr2ogr") is None, reason="gdal-bin is not installed")
def test_gdal_reads_every_collection_in_full(live_url: str, conn: psycopg.Connection, tmp_path):
    listing = subprocess.run(
        ["ogrinfo", "-ro", "-q", f"OAPIF:{live_url}/"], capture_output=True, text=True, timeout=120
    )
    assert listing.returncode == 0, listing.stderr
    for layer in LAYERS:
        assert layer in listing.stdout
        out = tmp_path / f"{layer}.geojson"
        copied = subprocess.run(
            ["ogr2ogr", "-f", "GeoJSON", str(out), f"OAPIF:{live_url}/", layer,
             "-oo", "PAGE_SIZE=1000"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert copied.returncode == 0, copied.stderr
        copied_features = json.loads(out.read_text())["features"]
        expected_count = conn.execute(f"SELECT count(*) FROM {layer}").fetchone()[0]
        assert len(copied_features) == expected_count, layer
        if layer == "sensors":  # numbers survive GDAL's type guessing, decimals included
            total = sum(f["properties"]["threshold_high"] or 0 for f in copied_features)
            expected = conn.execute("SELECT sum(threshold_high) FROM sensors").fetchone()[0]
            assert total == pytest.approx(expected)


def test_owslib_reads_items_and_queryables(live_url: str):
    from owslib.ogcapi.features import Features

    api = Features(live_url)
    ids = {c["id"] for c in api.collections()["collections"]}
    assert set(LAYERS) <= ids
    page = api.collection_items("sensors", limit=5)
    assert len(page["features"]) == 5
    queryables = api.collection_queryables("buildings")
    assert "height_m" in queryables["properties"]
    assert api.conformance()["conformsTo"]
    assert CRS84


def test_owslib_cql_filter_is_answered_as_get_would(live_url: str, client: TestClient):
    from owslib.ogcapi.features import Features

    cql = {"op": "=", "args": [{"property": "kind"}, "smoke"]}
    page = Features(live_url).collection_items("sensors", cql=cql, limit=3)
    expected = client.get(
        "/collections/sensors/items?filter-lang=cql2-json&filter=" + quote(json.dumps(cql))
    ).json()
    assert page["numberMatched"] == expected["numberMatched"] > 0
    assert {f["properties"]["kind"] for f in page["features"]} == {"smoke"}


# -- bbox means intersects; pages by key; links in headers; CRS names -------------------------


def test_bbox_selects_what_intersects_the_box_not_its_bounding_box(
    client: TestClient, conn: psycopg.Connection
):
    box = (121.395, 31.235, 121.405, 31.245)
    intersecting = {str(r[0]) for r in conn.execute(
        "SELECT id FROM buildings WHERE ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))", box)}  # fmt: skip
    touching = {str(r[0]) for r in conn.execute(
        "SELECT id FROM buildings WHERE geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326)", box)}  # fmt: skip
    assert touching - intersecting, "the demo has buildings whose box only touches this one"
    seen: set[str] = set()
    url = "/collections/buildings/items?limit=500&bbox=" + ",".join(map(str, box))
    while url:
        page = client.get(url).json()
        assert page["numberMatched"] == len(intersecting)
        seen |= {f["id"] for f in page["features"]}
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
    assert seen == intersecting
    # The same box given in Web Mercator selects the same buildings, less the edge slivers
    # a reprojected box may move by centimetres.
    x1, y1, x2, y2 = conn.execute(
        "SELECT ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) FROM"
        " ST_Transform(ST_MakeEnvelope(%s, %s, %s, %s, 4326), 3857) b",
        box,
    ).fetchone()
    mercator = client.get(
        f"/collections/buildings/items?bbox={x1},{y1},{x2},{y2}&bbox-crs=EPSG:3857&limit=1"
    ).json()
    assert abs(mercator["numberMatched"] - len(intersecting)) <= 2


def test_next_pages_go_by_key_and_links_are_in_the_header(
    client: TestClient, conn: psycopg.Connection
):
    first = client.get("/collections/pipes/items?limit=100&properties=network")
    links = first.headers["link"]
    assert 'rel="self"' in links and 'rel="next"' in links and 'rel="alternate"' in links
    assert 'type="application/geo+json"' in links and 'type="text/html"' in links
    next_href = next(
        part.split(">")[0].lstrip(" <") for part in links.split(", <") if 'rel="next"' in part
    )
    assert "after=" in next_href
    last_id = int(first.json()["features"][-1]["id"])
    second = client.get(next_href.replace("http://testserver", ""))
    ids = [int(f["id"]) for f in second.json()["features"]]
    expected = [r[0] for r in conn.execute(
        "SELECT id FROM pipes WHERE id > %s ORDER BY id LIMIT 100", (last_id,))]  # fmt: skip
    assert ids == expected
    assert 'rel="prev"' in second.headers["link"]
    assert client.get("/collections/pipes/items?after=1&sortby=id").status_code == 400
    assert client.get("/collections/pipes/items?after=abc").status_code == 400
    one = client.get(f"/collections/pipes/items/{last_id}")
    assert 'rel="collection"' in one.headers["link"]
    assert client.get("/collections/pipes/items?f=geojson&limit=1").json()["numberReturned"] == 1


@pytest.mark.parametrize(
    ("short", "uri"),
    [
        ("EPSG:4490", "http://www.opengis.net/def/crs/EPSG/0/4490"),
        ("4549", "http://www.opengis.net/def/crs/EPSG/0/4549"),
        ("CRS84", CRS84),
        ("urn:ogc:def:crs:EPSG::3857", "http://www.opengis.net/def/crs/EPSG/0/3857"),
    ],
)
def test_crs_short_forms_are_read_as_their_uris(client: TestClient, short: str, uri: str):
    by_short = client.get(f"/collections/sensors/items?limit=3&crs={quote(short)}")
    by_uri = client.get(f"/collections/sensors/items?limit=3&crs={quote(uri)}")
    assert by_short.status_code == 200, by_short.text
    assert by_short.headers["content-crs"] == f"<{uri}>"
    assert by_short.json()["features"] == by_uri.json()["features"]


def test_crs_and_bbox_crs_are_read_as_urns_and_nonsense_is_refused_naming_them(
    client: TestClient,
):
    items = "/collections/sensors/items?limit=5"
    plain = client.get(f"{items}&bbox=120,30,123,32")
    # EPSG:4326 is latitude first, as a bbox in it; CRS84 by its URN is longitude first.
    by_urn = client.get(
        f"{items}&bbox=30,120,32,123&bbox-crs=urn:ogc:def:crs:EPSG::4326"
        "&crs=urn:ogc:def:crs:OGC:1.3:CRS84"
    )
    assert by_urn.status_code == 200, by_urn.text
    assert by_urn.headers["content-crs"] == f"<{CRS84}>"
    assert by_urn.json()["features"] == plain.json()["features"] and plain.json()["features"]
    for parameter in ("crs", "bbox-crs"):
        bad = client.get(f"{items}&{parameter}=nonsense")
        assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
        assert bad.json()["detail"].startswith(f"{parameter} 'nonsense' is not supported")
    # An offset system is read by the spatial questions and imports, not served as features.
    assert "not supported" in client.get(f"{items}&crs=GCJ02").json()["detail"]


def test_a_bbox_of_no_width_selects_what_lies_on_it(client: TestClient, conn: psycopg.Connection):
    x, y = conn.execute("SELECT ST_X(geom), ST_Y(geom) FROM sensors ORDER BY id LIMIT 1").fetchone()
    point = client.get(f"/collections/sensors/items?bbox={x},{y},{x},{y}").json()
    expected = conn.execute(
        "SELECT count(*) FROM sensors WHERE ST_Intersects(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326))",
        (x, y),
    ).fetchone()[0]
    assert point["numberMatched"] == expected >= 1
    line = client.get(f"/collections/pipes/items?bbox={x},{y - 0.01},{x},{y + 0.01}&limit=1").json()
    on_line = conn.execute(
        "SELECT count(*) FROM pipes WHERE ST_Intersects(geom, ST_MakeLine("
        "ST_SetSRID(ST_MakePoint(%s, %s), 4326), ST_SetSRID(ST_MakePoint(%s, %s), 4326)))",
        (x, y - 0.01, x, y + 0.01),
    ).fetchone()[0]
    assert line["numberMatched"] == on_line


def test_a_filter_body_over_its_limit_is_413(client: TestClient):
    body = json.dumps({"op": "in", "args": [{"property": "name"}, ["x" * 100] * 20_000]})
    answer = client.post("/collections/buildings/items", content=body,
                         headers={"content-type": "application/query-cql-json"})  # fmt: skip
    assert answer.status_code == 413 and "filter body is over" in answer.json()["detail"]
