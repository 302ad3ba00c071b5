"""/nearest with max_distance gives exactly the brute-force answer: the k nearest features
within the distance, by geodesic distance, however few lie within it."""

from __future__ import annotations

import random

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql


def _brute_force(
    conn: psycopg.Connection, layer: str, lon: float, lat: float, k: int, metres: float
) -> list[tuple[str, float]]:
    """Every feature of the layer measured on the globe, no index, no candidates."""
    rows = conn.execute(
        sql.SQL(
            "SELECT id::text, ST_Distance(geom::geography, p::geography) AS d FROM {} f,"
            " ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326) p"
            " WHERE ST_Distance(geom::geography, p::geography) <= %(m)s ORDER BY d, id LIMIT %(k)s"
        ).format(sql.Identifier(layer)),
        {"lon": lon, "lat": lat, "m": metres, "k": k},
    ).fetchall()
    return [(row[0], round(row[1], 2)) for row in rows]


def _points(conn: psycopg.Connection) -> list[tuple[float, float]]:
    """Points inside the district, and around it where little or nothing is near."""
    west, south, east, north = conn.execute(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
        " FROM (SELECT ST_Extent(geom) e FROM jurisdictions WHERE level = 'district') x"
    ).fetchone()
    rng = random.Random(11)
    inside = [(rng.uniform(west, east), rng.uniform(south, north)) for _ in range(6)]
    edges = [(west - 0.004, (south + north) / 2), ((west + east) / 2, north + 0.003),
             (east + 0.03, south - 0.03)]  # fmt: skip
    return inside + edges


@pytest.mark.parametrize(
    ("layer", "k", "metres"),
    [("buildings", 5, 60.0), ("pipes", 5, 30.0), ("pipe_nodes", 20, 200.0),
     ("sensors", 20, 1000.0), ("sensors", 100, 1000.0), ("sensors", 100, 3000.0)],
)  # fmt: skip
def test_nearest_within_a_distance_is_the_brute_force_answer(
    client: TestClient, conn: psycopg.Connection, layer: str, k: int, metres: float
):
    found_some = found_fewer = 0
    for lon, lat in _points(conn):
        answer = client.get(
            "/nearest", params={"lon": lon, "lat": lat, "layers": layer, "k": k,
                                "max_distance": metres},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        got = [(f["id"], f["distance_m"]) for f in answer.json()[layer]]
        expected = _brute_force(conn, layer, lon, lat, k, metres)
        assert [d for _, d in got] == [d for _, d in expected], (lon, lat)
        assert {i for i, _ in got} == {i for i, _ in expected}, (lon, lat)
        assert all(d <= metres for _, d in got)
        found_some += bool(got)
        found_fewer += len(got) < k
    # The points reach both cases: features within the distance, and fewer than k of them.
    assert found_some and found_fewer


@pytest.mark.parametrize(("lon", "lat"), [(0.0, -89.9), (-179.9, 0.0), (10.0, 75.0), (121.0, 80.0)])
def test_nearest_far_from_the_city_is_the_order_on_the_globe(
    client: TestClient, conn: psycopg.Connection, lon: float, lat: float
):
    # Degrees are not metres far from the equator or across the antimeridian: the index's
    # order is only where the search starts.
    for layer in ("sensors", "buildings"):
        answer = client.get(f"/nearest?lon={lon}&lat={lat}&layers={layer}&k=5").json()[layer]
        expected = _brute_force(conn, layer, lon, lat, 5, 1e8)
        assert [round(a["distance_m"], 0) for a in answer] == [round(d, 0) for _, d in expected]
        assert {a["id"] for a in answer} == {i for i, _ in expected}
