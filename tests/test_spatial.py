"""Locate, nearest, within and below, through the real app on the small demo city."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient

from twin.crs import from_storage, wgs84_to_gcj02

LEVELS = ["city", "district", "street", "grid", "community"]


def a_building(conn: psycopg.Connection) -> tuple[int, float, float]:
    """A demo building with a pipe close by, and a point inside it."""
    return conn.execute(
        """
        SELECT b.id, ST_X(ST_PointOnSurface(b.geom)), ST_Y(ST_PointOnSurface(b.geom))
        FROM buildings b WHERE b.dataset = 'demo' AND EXISTS (
            SELECT 1 FROM pipes p WHERE ST_Intersects(p.geom, b.geom))
        ORDER BY b.id LIMIT 1
        """
    ).fetchone()


def test_locate_names_every_level_the_units_and_what_is_here(client: TestClient, conn):
    building_id, lon, lat = a_building(conn)
    answer = client.get(f"/locate?lon={lon}&lat={lat}").json()
    assert answer["inside"] is True
    assert [j["level"] for j in answer["jurisdictions"]] == LEVELS
    codes = [j["code"] for j in answer["jurisdictions"]]
    expected = {
        r[0]
        for r in conn.execute(
            "SELECT code FROM jurisdictions WHERE ST_Intersects(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326))",
            (lon, lat),
        )
    }
    assert set(codes) == expected
    unit_places = {u["jurisdiction_code"] for u in answer["units"]}
    assert unit_places <= set(codes) and len(answer["units"]) >= 5
    assert answer["building"]["id"] == building_id
    # Pipes beneath come with depth, shallowest first.
    depths = [p["depth_m"] for p in answer["pipes_beneath"]]
    assert depths == sorted(depths) and all(p["distance_m"] <= 5 for p in answer["pipes_beneath"])


def test_locate_in_gcj02_finds_the_same_place(client: TestClient, conn):
    _, lon, lat = a_building(conn)
    glon, glat = wgs84_to_gcj02(lon, lat)
    plain = client.get(f"/locate?lon={lon}&lat={lat}").json()
    shifted = client.get(f"/locate?lon={float(glon)}&lat={float(glat)}&crs=GCJ02").json()
    assert shifted["jurisdictions"] == plain["jurisdictions"]
    assert shifted["building"]["id"] == plain["building"]["id"]


def test_crs_is_read_as_a_urn_too_and_nonsense_is_refused_naming_crs(client: TestClient, conn):
    _, lon, lat = a_building(conn)
    plain = client.get(f"/locate?lon={lon}&lat={lat}").json()
    by_urn = client.get(f"/locate?lon={lon}&lat={lat}&crs=urn:ogc:def:crs:EPSG::4326")
    assert by_urn.status_code == 200 and by_urn.json() == plain
    # The same point in Gauss-Krüger metres, its CRS named by URN: the same nearest sensors.
    gk = from_storage(np.array([shapely.Point(lon, lat)]), "EPSG:4549")[0]
    near = client.get(f"/nearest?lon={lon}&lat={lat}&layers=sensors&k=3").json()
    urn = "urn:ogc:def:crs:EPSG::4549"
    near_gk = client.get(f"/nearest?lon={gk.x}&lat={gk.y}&crs={urn}&layers=sensors&k=3").json()
    assert [s["id"] for s in near_gk["sensors"]] == [s["id"] for s in near["sensors"]]
    bad = client.get(f"/nearest?lon={lon}&lat={lat}&crs=nonsense")
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["detail"].startswith("unknown CRS 'nonsense'")
    assert bad.json()["parameter"] == "crs" and "(parameter crs)" in bad.json()["detail"]


def test_a_point_outside_every_jurisdiction_says_so(client: TestClient):
    answer = client.get("/locate?lon=116.39&lat=39.91").json()
    assert answer["inside"] is False and "outside every jurisdiction" in answer["message"]
    assert answer["jurisdictions"] == [] and answer["building"] is None


def test_nearest_is_ordered_in_metres_and_respects_max_distance(client: TestClient, conn):
    _, lon, lat = a_building(conn)
    answer = client.get(f"/nearest?lon={lon}&lat={lat}&layers=sensors,pipe_nodes&k=5").json()
    for layer in ("sensors", "pipe_nodes"):
        distances = [f["distance_m"] for f in answer[layer]]
        assert len(distances) == 5 and distances == sorted(distances)
    true_nearest = conn.execute(
        "SELECT id::text FROM sensors ORDER BY geom::geography <-> ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography LIMIT 1",
        (lon, lat),
    ).fetchone()[0]
    assert answer["sensors"][0]["id"] == true_nearest
    assert answer["sensors"][0]["geometry"]["type"] == "Point"  # dispatch puts it on the map
    close = client.get(f"/nearest?lon={lon}&lat={lat}&layers=sensors&k=50&max_distance=150").json()
    assert all(f["distance_m"] <= 150 for f in close["sensors"])


def test_within_a_radius_and_a_polygon_counts_by_layer(client: TestClient, conn):
    _, lon, lat = a_building(conn)
    circle = client.get(
        f"/within?lon={lon}&lat={lat}&radius=300&layers=buildings,sensors&limit=5000"
    ).json()
    for layer in ("buildings", "sensors"):
        # Exactly the features within 300 m by geodesic distance: none missed at the rim.
        expected = {str(r[0]) for r in conn.execute(
            f"SELECT id FROM {layer} WHERE ST_DWithin(geom::geography,"
            " ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography, 300)", (lon, lat))}  # fmt: skip
        assert {f["id"] for f in circle["features"][layer]} == expected
        assert circle["counts"][layer] == len(expected) > 0
    assert circle["area_m2"] == round(np.pi * 300**2, 1)
    d = 0.002
    square = {"type": "Polygon", "coordinates": [[[lon - d, lat - d], [lon + d, lat - d],
              [lon + d, lat + d], [lon - d, lat + d], [lon - d, lat - d]]]}  # fmt: skip
    flooded = client.post(
        "/within", json={"geometry": square, "layers": "buildings,sensors,units,pipes"}
    )
    assert flooded.status_code == 200
    body = flooded.json()
    assert body["counts"]["buildings"] == len(body["features"]["buildings"]) > 0
    assert body["features"]["buildings"][0]["geometry"]["type"] == "MultiPolygon"
    by_wkt = client.post(
        "/within",
        json={
            "wkt": f"POLYGON(({lon - d} {lat - d}, {lon + d} {lat - d}, {lon + d} {lat + d}, {lon - d} {lat + d}, {lon - d} {lat - d}))",
            "layers": "buildings",
        },
    )
    assert by_wkt.json()["counts"]["buildings"] == body["counts"]["buildings"]


def test_a_radius_finds_features_at_its_rim(client: TestClient, conn):
    # Buildings 297-300 m away: a polygon approximating the circle cuts some of them off.
    _, lon, lat = a_building(conn)
    rim = {str(r[0]) for r in conn.execute(
        "SELECT id FROM buildings, (SELECT ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography) x(p)"
        " WHERE ST_DWithin(geom::geography, p, 300) AND NOT ST_DWithin(geom::geography, p, 297)",
        (lon, lat))}  # fmt: skip
    assert rim
    answer = client.get(f"/within?lon={lon}&lat={lat}&radius=300&layers=buildings&limit=5000")
    assert rim <= {f["id"] for f in answer.json()["features"]["buildings"]}


def test_near_the_antimeridian_a_radius_is_answered(client: TestClient):
    answer = client.get("/within?lon=179.999&lat=31.24&radius=300&layers=buildings")
    assert answer.status_code == 200, answer.text
    assert answer.json()["counts"]["buildings"] == 0


def test_below_a_building_lists_pipes_shallowest_first(client: TestClient, conn):
    building_id, _, _ = a_building(conn)
    answer = client.get(f"/below?building_id={building_id}").json()
    assert answer["pipes"] and answer["networks"]
    depths = [p["properties"]["depth_m"] for p in answer["pipes"]]
    assert depths == sorted(depths)
    assert client.get("/below?building_id=999999999").status_code == 404


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("/locate?lon=31.24&lat=121.40", "swapped"),
        ("/locate?lon=nan&lat=31", "finite"),
        ("/locate?lon=inf&lat=31", "finite"),
        ("/locate?lon=200&lat=31", "beyond ±180"),
        ("/locate?lon=121.4&lat=31.2&crs=EPSG:999999", "unknown CRS"),
        ("/nearest?lon=121.4&lat=31.2&layers=users", "unknown layer"),
        ("/nearest?lon=121.4&lat=31.2&k=1000000", "k"),
        ("/nearest?lon=121.4&lat=31.2&k=-1", "k"),
        ("/within?lon=121.4&lat=31.2&radius=1e9", "radius"),
        ("/below?building_id=abc", "building_id"),
    ],
)
def test_bad_questions_are_clear_400s(client: TestClient, url: str, words: str):
    answer = client.get(url)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert words in answer.json()["detail"]


def test_an_area_too_large_or_broken_is_refused(client: TestClient):
    huge = {
        "type": "Polygon",
        "coordinates": [[[120, 30], [122, 30], [122, 32], [120, 32], [120, 30]]],
    }
    answer = client.post("/within", json={"geometry": huge})
    assert answer.status_code == 400 and "km²" in answer.json()["detail"]
    bowtie = "POLYGON((121.40 31.24, 121.41 31.25, 121.41 31.24, 121.40 31.25, 121.40 31.24))"
    assert "not a valid polygon" in client.post("/within", json={"wkt": bowtie}).json()["detail"]
    assert client.post("/within", json={"wkt": "POLYGON((oops"}).status_code == 400
    assert client.post("/below", json={}).status_code == 400
    collection = {"geometry": {"type": "FeatureCollection", "features": []}}
    assert client.post("/within", json=collection).status_code == 400
    world = "POLYGON((-180 -90, 180 -90, 180 90, -180 90, -180 -90))"
    assert client.post("/within", json={"wkt": world}).status_code == 400
    thin = {"type": "Polygon", "coordinates": [[[179.99, 31.2], [-179.99, 31.2], [-179.99, 31.27],
            [179.99, 31.27], [179.99, 31.2]]]}  # fmt: skip
    across = client.post("/within", json={"geometry": thin})
    assert across.status_code == 400 and "antimeridian" in across.json()["detail"]


def test_below_counts_everything_even_when_the_list_is_cut(client: TestClient, conn):
    d = 0.03
    west, south = 121.37, 31.22
    wkt = f"POLYGON(({west} {south}, {west + d} {south}, {west + d} {south + d}, {west} {south + d}, {west} {south}))"
    answer = client.post("/below", json={"wkt": wkt}).json()
    pipes = conn.execute(
        "SELECT count(*), array_agg(DISTINCT network ORDER BY network) FROM pipes"
        " WHERE ST_Intersects(geom, ST_GeomFromText(%s, 4326))",
        (wkt,),
    ).fetchone()
    assert answer["counts"]["pipes"] == pipes[0]
    assert answer["networks"] == pipes[1]
    assert answer["truncated"] == (pipes[0] > len(answer["pipes"]))


def test_a_radius_at_a_pole_reaches_every_longitude(settings, fresh_url: str):
    from fastapi.testclient import TestClient as Client

    from api.app import create_app

    with psycopg.connect(fresh_url) as conn:  # two sensors at the south pole, as files write it
        conn.execute(
            "INSERT INTO sensors (device_id, kind, unit_of_measure, dataset, geom)"
            " SELECT d, 'smoke', 'ppm', 'poles', ST_SetSRID(ST_MakePoint(x, -90), 4326)"
            " FROM (VALUES ('P1', 0.0), ('P2', -180.0)) v(d, x)"
        )
    with Client(create_app(settings, database_url=fresh_url)) as client:
        answer = client.get("/within?lon=0&lat=-90&radius=10&layers=sensors").json()
    assert answer["counts"]["sensors"] == 2
