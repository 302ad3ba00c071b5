"""The excavation check through the real app: pipes and nodes imported as a provider's
GeoJSON at a site of their own, away from the demo's networks, then a dig over them."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.helpers import make_data_dir, run_twin, settings_for
from twin.crs import wgs84_to_gcj02

KEY = {"X-API-Key": "test-key"}
URL = "/network/excavation"
# The site: a street with its own pipes, some 5 km east of the demo's networks.
LON0, LAT0 = 121.46, 31.20
M_LON = 1 / (111_320 * math.cos(math.radians(LAT0)))  # degrees in a metre, near enough
M_LAT = 1 / 110_860
GAS, POWER, WATERCO = "U-310199-GAS", "U-310199-POWER", "U-310199-WATERCO"


def at(x: float, y: float) -> list[float]:
    """The site's point x metres east and y metres north of its origin."""
    return [LON0 + x * M_LON, LAT0 + y * M_LAT]


def box(west: float, south: float, east: float, north: float) -> dict:
    """A dig's outline, in metres from the site's origin."""
    ring = [at(west, south), at(east, south), at(east, north), at(west, north), at(west, south)]
    return {"type": "Polygon", "coordinates": [ring]}


def _pipe(source_id: str, x: float, **properties: object) -> dict:
    """A pipe running north-south across the site at x metres, 60 m long."""
    return {"type": "Feature", "id": source_id, "properties": properties,
            "geometry": {"type": "LineString", "coordinates": [at(x, -30), at(x, 30)]}}  # fmt: skip


PIPES = [
    _pipe("G-1", 0, network="gas", diameter_mm=160, material="PE", depth_m=1.2, owner_unit=GAS),
    _pipe("G-2", 3, network="gas", diameter_mm=110, material="PE", depth_m=0.8, owner_unit=GAS),
    _pipe("P-1", -3, network="power", diameter_mm=200, depth_m=0.7, owner_unit=POWER),
    # The shallowest of all, and still after gas and power.
    _pipe("W-1", 6, network="water", diameter_mm=300, depth_m=0.5, owner_unit=WATERCO),
    _pipe("T-1", -6, network="telecom", diameter_mm=110),  # no depth, no owner
    _pipe("S-1", 9, network="sewage", diameter_mm=400, depth_m=2.5, owner_unit="U-NOBODY"),
    # 2 m east of the dig's edge (x = 10): under it only with a margin of 2 m or more.
    _pipe("G-9", 12, network="gas", diameter_mm=63, depth_m=0.9, owner_unit=GAS),
]
NODES = [
    {"type": "Feature", "id": "V-1", "geometry": {"type": "Point", "coordinates": at(0, 0)},
     "properties": {"network": "gas", "kind": "valve", "state": "open", "depth_m": 1.1,
                    "owner_unit": GAS}},
    {"type": "Feature", "id": "H-1", "geometry": {"type": "Point", "coordinates": at(6, 5)},
     "properties": {"network": "water", "kind": "hydrant", "depth_m": 1.0,
                    "owner_unit": WATERCO}},
]  # fmt: skip
DIG = box(-8, -10, 10, 10)  # 18 m by 20 m, over all but G-9


@pytest.fixture(scope="module")
def staff(module_url: str) -> Iterator[TestClient]:
    settings = settings_for(make_data_dir("twin-dig-"), api={"api_keys": {"test-key": "工程师"}})
    with TestClient(create_app(settings, database_url=module_url)) as client:
        for layer, features in (("pipes", PIPES), ("pipe_nodes", NODES)):
            body = {"type": "FeatureCollection", "features": features}
            loaded = client.post(f"/layers/{layer}/features?dataset=site", json=body, headers=KEY)
            assert loaded.status_code == 200, loaded.text
        yield client


def _check(staff: TestClient, area: dict, **fields: object) -> dict:
    answer = staff.post(URL, json={"area": area, **fields}, headers=KEY)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_dig_lists_gas_then_power_then_the_rest_shallowest_first_with_owners(staff):
    answer = _check(staff, DIG)
    assert [p["source_id"] for p in answer["pipes"]] == ["G-2", "G-1", "P-1", "W-1", "T-1", "S-1"]
    assert [n["source_id"] for n in answer["nodes"]] == ["V-1", "H-1"]
    g2 = answer["pipes"][0]
    assert g2["network"] == "gas" and g2["dataset"] == "site" and g2["diameter_mm"] == 110
    assert g2["depth_m"] == 0.8 and g2["depth_from"] == "recorded" and g2["status"] == "in_service"
    assert g2["owner"] == {"code": GAS, "name": "演示区燃气公司"}
    # Crossing the 20 m dig and 1 m of margin at each end, measured on the globe.
    assert g2["length_m"] == pytest.approx(22, abs=0.1) and g2["distance_m"] == 0
    telecom = answer["pipes"][4]
    assert telecom["depth_m"] is None and telecom["depth_from"] is None and telecom["owner"] is None
    sewage = answer["pipes"][5]
    assert sewage["owner"] == {"code": "U-NOBODY", "name": None}
    valve = answer["nodes"][0]
    assert valve["kind"] == "valve" and valve["depth_m"] == 1.1 and valve["owner"]["code"] == GAS
    assert answer["area_m2"] == pytest.approx(360, rel=0.01) and answer["margin_m"] == 1.0
    assert answer["area"]["type"] == "Polygon"
    assert answer["counts"] == {"pipes": 6, "nodes": 2} and answer["truncated"] is False
    networks = {n["network"]: n for n in answer["networks"]}
    assert [n["network"] for n in answer["networks"]] == ["gas", "power", "water", "telecom",
                                                           "sewage"]  # fmt: skip
    assert networks["gas"]["pipes"] == 2 and networks["gas"]["nodes"] == 1
    assert networks["gas"]["owners"] == [
        {"code": GAS, "name": "演示区燃气公司", "phone": "021-66432605"}
    ]
    assert networks["telecom"]["owners"] == [] and networks["telecom"]["unowned"] == 1
    warnings = answer["warnings"]
    assert warnings[0].startswith("gas under the dig or within 1 m of it: 2 pipes and 1 node")
    assert "call 演示区燃气公司 (021-66432605) before digging" in warnings[0]
    assert warnings[1].startswith("power under the dig") and "0.7 m" in warnings[1]
    assert "1 pipe of unknown depth (T-1): locate it before digging" in warnings
    assert "1 pipe or node has no owner recorded (telecom)" in warnings
    assert any("'U-NOBODY' is no unit's code" in w for w in warnings)


def test_the_margin_widens_the_dig(staff):
    tight = _check(staff, DIG, margin_m=0)
    assert "G-9" not in {p["source_id"] for p in tight["pipes"]}
    assert tight["pipes"][0]["length_m"] == pytest.approx(20, abs=0.1)
    assert tight["warnings"][0].startswith("gas under the dig: ")
    wide = _check(staff, DIG, margin_m=2.5)
    g9 = next(p for p in wide["pipes"] if p["source_id"] == "G-9")
    assert g9["distance_m"] == pytest.approx(2, abs=0.05)
    assert [p["network"] for p in wide["pipes"]][:3] == ["gas"] * 3  # G-9 with the gas, by depth
    assert [p["source_id"] for p in wide["pipes"]][:3] == ["G-2", "G-9", "G-1"]


def test_a_dig_over_nothing_finds_nothing(staff):
    answer = _check(staff, box(1000, 1000, 1020, 1020), margin_m=5)
    assert answer["pipes"] == [] and answer["nodes"] == [] and answer["networks"] == []
    assert answer["warnings"] == [] and answer["counts"] == {"pipes": 0, "nodes": 0}


def test_a_dig_in_another_crs_finds_the_same(staff):
    ring = DIG["coordinates"][0]
    shifted = [[float(v) for v in wgs84_to_gcj02(lon, lat)] for lon, lat in ring]
    answer = _check(staff, {"type": "Polygon", "coordinates": [shifted]}, crs="GCJ02")
    plain = _check(staff, DIG)
    assert [p["id"] for p in answer["pipes"]] == [p["id"] for p in plain["pipes"]]


def test_depth_is_worked_out_from_inverts_and_ground_where_not_recorded(staff, module_url):
    # Two demo drainage pipes without a recorded depth: one whose end nodes know the
    # ground, one drawn without nodes, whose ground is the terrain's.
    with psycopg.connect(module_url, autocommit=True) as conn:
        linked, loose = conn.execute(
            "SELECT id FROM pipes WHERE network = 'drainage' AND dataset = 'demo'"
            " ORDER BY id LIMIT 2"
        ).fetchall()
        conn.execute("UPDATE pipes SET depth_m = NULL WHERE id = ANY(%s)", ([linked[0], loose[0]],))
        conn.execute("UPDATE pipes SET from_node_id = NULL, to_node_id = NULL WHERE id = %s", loose)
        expected_linked = conn.execute(
            """SELECT LEAST(a.ground_elevation_m - p.invert_start_m, b.ground_elevation_m
                            - p.invert_end_m) - p.diameter_mm / 1000
               FROM pipes p, pipe_nodes a, pipe_nodes b
               WHERE p.id = %s AND a.id = p.from_node_id AND b.id = p.to_node_id""",
            linked,
        ).fetchone()[0]
        expected_loose = conn.execute(
            """SELECT LEAST(
                 (SELECT ST_Value(rast, ST_StartPoint(p.geom)) FROM terrain_tiles
                  WHERE ST_Intersects(rast, ST_StartPoint(p.geom)) ORDER BY id DESC LIMIT 1) - p.invert_start_m,
                 (SELECT ST_Value(rast, ST_EndPoint(p.geom)) FROM terrain_tiles
                  WHERE ST_Intersects(rast, ST_EndPoint(p.geom)) ORDER BY id DESC LIMIT 1) - p.invert_end_m
               ) - p.diameter_mm / 1000 FROM pipes p WHERE p.id = %s""",
            loose,
        ).fetchone()[0]
        outline = conn.execute(
            "SELECT ST_AsGeoJSON(ST_Envelope(ST_Buffer(ST_Collect(geom), 0.0001)))::json"
            " FROM pipes WHERE id = ANY(%s)",
            ([linked[0], loose[0]],),
        ).fetchone()[0]
    answer = _check(staff, outline, margin_m=0)
    found = {p["id"]: p for p in answer["pipes"]}
    for pipe_id, expected in ((linked[0], expected_linked), (loose[0], expected_loose)):
        assert found[pipe_id]["depth_from"] == "inverts and ground"
        assert found[pipe_id]["depth_m"] == pytest.approx(expected, abs=0.01)
    assert any("worked out from invert and ground elevations" in w for w in answer["warnings"])


BAD = [
    ({"area": DIG, "margin_m": float("nan")}, "margin_m", "not a finite number"),
    ({"area": DIG, "margin_m": 51}, "margin_m", "more than 50"),
    ({"area": DIG, "margin_m": -1}, "margin_m", "less than 0"),
    ({"area": DIG, "margin_m": "1"}, "margin_m", "must be a number, not text"),
    ({"area": DIG, "margin_m": 10**400}, "margin_m", "digits is no margin"),
    ({"area": DIG, "crs": "nonsense"}, "crs", "unknown CRS 'nonsense'"),
    ({"area": DIG, "crs": "EPSG:4326\x00"}, "crs", "NUL byte"),
    ({"area": DIG, "crs": 4549}, "crs", "must be text, not a number"),
    ({"area": DIG, "crs": "EPSG:4549"}, "crs", "cannot be in EPSG:4549"),
    ({"area": DIG, "depth": 3}, "depth", "is not a field this request takes"),
    ({"area": "POLYGON((0 0, 1 0, 1 1, 0 0))"}, "area", "must be a JSON object, not text"),
    ({}, "area", "body area is required"),
    ({"area": {"type": "Polygon", "coordinates": []}}, "area", "the area is empty"),
    ({"area": {"type": "Point", "coordinates": at(0, 0)}}, "area", "Polygon or MultiPolygon"),
    ({"area": {"type": "Polygon", "coordinates": [[at(0, 0), at(10, 10), at(10, 0), at(0, 10),
                                                   at(0, 0)]]}}, "area", "crosses itself"),
    ({"area": {"type": "Polygon", "coordinates": [[at(0, 0), at(1, 0), at(1, 1)]]}}, "area",
     "is not closed"),
    ({"area": {"type": "Polygon", "coordinates": [[[121.46, 31.2], [2**70, 31.2], [121.47, 31.21],
                                                   [121.46, 31.2]]]}}, "area",
     "coordinate 1 of ring 0: longitude 1.180591621e+21 is beyond ±180"),
    ({"area": {"type": "Polygon", "coordinates": [[[121.46, 31.2], [float("inf"), 31.2],
                                                   [121.47, 31.21], [121.46, 31.2]]]}}, "area",
     "coordinate 1 of ring 0: longitude inf is not a finite number"),
    ({"area": {"type": "Polygon", "coordinates": [[[121.46, 31.2], ["x", 31.2], [121.47, 31.21],
                                                   [121.46, 31.2]]]}}, "area", "is text, not a number"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field", "said"), BAD)
def test_bad_input_is_refused_naming_what_is_wrong(staff, body, field, said):
    answer = staff.post(URL, content=json.dumps(body, allow_nan=True), headers={
        **KEY, "Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    detail = answer.json()["detail"]
    assert said in detail and (field in detail or field == "area"), detail


def test_bodies_no_reader_takes_are_refused(staff):
    deep = '{"area": ' + "[" * 100_000 + "]" * 100_000 + "}"
    for content, said in (
        (deep, "nested too deeply"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ):
        answer = staff.post(URL, content=content,
                            headers={**KEY, "Content-Type": "application/json"})  # fmt: skip
        assert answer.status_code == 400 and said in answer.json()["detail"], answer.text
    ring = [at(math.cos(a / 25_000 * math.tau) * 50, math.sin(a / 25_000 * math.tau) * 50)
            for a in range(25_000)]  # fmt: skip
    many = staff.post(URL, json={"area": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}},
                      headers=KEY)  # fmt: skip
    assert many.status_code == 400 and "more than 20,000 vertices" in many.json()["detail"]


def test_a_dig_over_a_square_kilometre_is_422_saying_the_limit(staff):
    answer = staff.post(URL, json={"area": box(0, 0, 1100, 1000)}, headers=KEY)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["title"] == "Unprocessable Content" and body["parameter"] == "area"
    assert "at most 1,000,000 m² (1 km²)" in body["detail"]
    assert body["detail"].startswith("the dig is 1,")


def test_only_network_staff_may_ask(staff):
    assert staff.post(URL, json={"area": DIG}).status_code == 401
    made = staff.post("/keys", json={"name": "市民-挖掘", "role": "resident"}, headers=KEY)
    assert made.status_code == 201, made.text
    resident = staff.post(URL, json={"area": DIG}, headers={"X-API-Key": made.json()["key"]})
    assert resident.status_code == 403 and "query networks" in resident.json()["detail"]
    made = staff.post("/keys", json={"name": "工程师-挖掘", "role": "engineer"}, headers=KEY)
    engineer = staff.post(URL, json={"area": DIG}, headers={"X-API-Key": made.json()["key"]})
    assert engineer.status_code == 200


def test_the_command_line_prints_gas_and_power_first(staff, module_url: str, tmp_path: Path):
    outline = tmp_path / "dig.geojson"
    outline.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": DIG}))
    result = run_twin("network", "excavation", str(outline), "--margin", "0.5",
                      env={"TWIN_DATABASE_URL": module_url})  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "6 pipes and 2 nodes under it or within 0.5 m" in lines[0]
    rows = [line for line in lines if line.startswith("│")]
    assert [row.split("│")[3].strip() for row in rows] == ["G-2", "G-1", "V-1", "P-1", "W-1",
                                                            "H-1", "T-1", "S-1"]  # fmt: skip
    assert "演示区燃气公司" in rows[0] and rows[6].split("│")[4].strip() == "?"
    assert "gas: 演示区燃气公司 (U-310199-GAS), 021-66432605" in result.stdout
    assert "! gas under the dig or within 0.5 m of it" in result.stdout
    wrong = run_twin("network", "excavation", str(outline), "--margin", "60",
                     env={"TWIN_DATABASE_URL": module_url})  # fmt: skip
    assert wrong.returncode == 1
    assert "margin_m 60 is outside 0 to 50 m (option --margin)" in wrong.stderr
