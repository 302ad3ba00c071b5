"""Loading data over HTTP: uploads, GeoJSON features and scenes, for staff only."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.helpers import make_data_dir, settings_for

KEY = {"X-API-Key": "test-key"}
POINTS = {
    "type": "FeatureCollection",
    "features": [
        {"type": "Feature", "id": "t1", "properties": {"count": "3", "note": "gate"},
         "geometry": {"type": "Point", "coordinates": [121.401, 31.241]}},
        {"type": "Feature", "id": "t2", "properties": {"count": 5},
         "geometry": {"type": "Point", "coordinates": [121.402, 31.242]}},
    ],
}  # fmt: skip


@pytest.fixture
def staff(fresh_url: str) -> Iterator[TestClient]:
    settings = settings_for(make_data_dir("twin-api-"), api_keys={"test-key": "tester"})
    with TestClient(create_app(settings, database_url=fresh_url)) as client:
        yield client


def test_a_street_registers_a_scene_and_loads_it_without_a_restart(staff: TestClient):
    scene = {"name": "ebike_theft", "geometry_type": "Point", "owner_unit": "长寿路街道",
             "properties": {"count": "integer", "note": "string"}}  # fmt: skip
    assert staff.post("/scenes", json=scene).status_code == 401  # no key, no scene
    created = staff.post("/scenes", json=scene, headers=KEY)
    assert created.status_code == 201, created.text
    assert created.json()["kind"] == "scene"
    loaded = staff.post("/layers/ebike_theft/features", json=POINTS, headers=KEY)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["inserted"] == 2 and loaded.json()["caller"] == "tester"
    listed = {layer["name"]: layer for layer in staff.get("/layers").json()["layers"]}
    assert listed["ebike_theft"]["feature_count"] == 2
    assert listed["ebike_theft"]["owner_unit"] == "长寿路街道"
    assert listed["ebike_theft"]["property_schema"]["properties"]["count"] == {"type": "integer"}
    # The spatial questions take a scene like a built-in layer, its properties as summary.
    near = staff.get("/nearest?lon=121.401&lat=31.241&layers=ebike_theft,buildings&k=1")
    assert near.status_code == 200, near.text
    first = near.json()["ebike_theft"][0]
    assert first["properties"] == {"count": 3, "note": "gate"} and first["distance_m"] < 1
    inside = staff.get("/within?lon=121.4015&lat=31.2415&radius=200&layers=ebike_theft")
    assert inside.status_code == 200, inside.text
    assert inside.json()["counts"] == {"ebike_theft": 2}
    unknown = staff.get("/nearest?lon=121.401&lat=31.241&layers=castles")
    assert unknown.status_code == 400 and "or a scene" in unknown.json()["detail"]
    again = staff.post("/scenes", json=scene, headers=KEY)
    assert again.status_code == 400 and "exists already" in again.json()["detail"]
    assert staff.delete("/scenes/ebike_theft", headers=KEY).status_code == 204
    assert staff.get("/layers/ebike_theft").status_code == 404


def test_scene_names_and_types_are_checked(staff: TestClient):
    bad_name = staff.post("/scenes", json={"name": "Robert'); DROP TABLE buildings;--",
                                           "geometry_type": "Point"}, headers=KEY)  # fmt: skip
    assert bad_name.status_code == 400 and "name" in bad_name.json()["detail"]
    bad_type = staff.post("/scenes", json={"name": "odd", "geometry_type": "Circle"}, headers=KEY)
    assert bad_type.status_code == 400 and "Circle" in bad_type.json()["detail"]
    builtin = staff.post(
        "/scenes", json={"name": "buildings", "geometry_type": "Point"}, headers=KEY
    )
    assert builtin.status_code == 400 and "built-in" in builtin.json()["detail"]
    # A property every feature has already would be shadowed by it: refused.
    clash = staff.post("/scenes", json={"name": "clash", "geometry_type": "Point",
                                        "properties": {"source_id": "number"}}, headers=KEY)  # fmt: skip
    assert clash.status_code == 400 and "is taken" in clash.json()["detail"]
    for taken in ("source_id", "limit", "crs"):  # a feature's own, a query parameter
        clash = staff.post("/scenes", json={"name": "clash", "geometry_type": "Point",
                                            "properties": {taken: "number"}}, headers=KEY)  # fmt: skip
        assert clash.status_code == 400 and "taken" in clash.json()["detail"]
    short = staff.post("/scenes", json={"name": "short", "geometry_type": "Point",
                                        "properties": {"x": "integer"}}, headers=KEY)  # fmt: skip
    assert short.status_code == 400 and "2-40 lower-case letters" in short.json()["detail"]


def test_upload_a_file_into_a_layer(staff: TestClient):
    body = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "u1", "高度": "30米", "层数": "10"},
         "geometry": {"type": "Polygon", "coordinates": [[[121.40, 31.24], [121.4002, 31.24],
                      [121.4002, 31.2402], [121.40, 31.2402], [121.40, 31.24]]]}}]})  # fmt: skip
    answer = staff.post(
        "/layers/buildings/import",
        files={"file": ("survey.geojson", body, "application/geo+json")},
        data={"provider": "测绘院", "licence": "internal"},
        headers=KEY,
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["read"], report["inserted"], report["source"]) == (1, 1, "survey.geojson")
    layer = staff.get("/layers/buildings").json()
    assert layer["provider"] == "测绘院" and layer["licence"] == "internal"


def test_upload_values_may_be_numbers_and_booleans(staff: TestClient):
    csv = "device_id,kind,lon,lat\nV-1,水位,121.4005,31.2405\n"
    answer = staff.post(
        "/layers/sensors/import",
        files={"file": ("v.csv", csv, "text/csv")},
        data={"values": json.dumps({"online": False, "threshold_high": 0.5})},
        headers=KEY,
    )
    assert answer.status_code == 200, answer.text
    sensor = staff.get("/collections/sensors/items", params={"device_id": "V-1"}).json()
    properties = sensor["features"][0]["properties"]
    assert properties["online"] is False and properties["threshold_high"] == 0.5
    assert properties["unit_of_measure"] == "m"  # not in the file: the kind's unit
    nested = staff.post(
        "/layers/sensors/import",
        files={"file": ("v.csv", csv, "text/csv")},
        data={"values": json.dumps({"online": [1]})},
        headers=KEY,
    )
    assert nested.status_code == 400 and "values must be" in nested.json()["detail"]


def test_bad_uploads_are_clear_400s_and_need_a_key(staff: TestClient):
    cut = staff.post(
        "/layers/buildings/import",
        files={"file": ("cut.geojson", '{"type": "FeatureCollection", "feat', "application/json")},
        headers=KEY,
    )
    assert cut.status_code == 400
    assert cut.headers["content-type"].startswith("application/problem+json")
    assert "cannot read cut.geojson" in cut.json()["detail"]
    assert "twin-upload" not in cut.json()["detail"]  # the client's name, not our folder
    exe = staff.post("/layers/buildings/import", files={"file": ("x.exe", b"MZ")}, headers=KEY)
    assert exe.status_code == 400 and ".exe" in exe.json()["detail"]
    anonymous = staff.post("/layers/buildings/import", files={"file": ("a.geojson", "{}")})
    assert anonymous.status_code == 401
    unknown = staff.post("/layers/castles/features", json=POINTS, headers=KEY)
    assert unknown.status_code == 404
    not_geojson = staff.post("/layers/sensors/features", json={"hello": 1}, headers=KEY)
    assert not_geojson.status_code == 400 and "GeoJSON" in not_geojson.json()["detail"]


def _point(fid: str, lon: float = 121.401) -> dict:
    return {"type": "Feature", "id": fid, "properties": {},
            "geometry": {"type": "Point", "coordinates": [lon, 31.241]}}  # fmt: skip


def test_some_rejected_is_200_with_the_report(staff: TestClient):
    square = [[[121.40, 31.24], [121.4002, 31.24], [121.4002, 31.2402], [121.40, 31.2402],
               [121.40, 31.24]]]  # fmt: skip
    document = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "ok", "properties": {},
         "geometry": {"type": "Polygon", "coordinates": square}},
        _point("pt"),
    ]}  # fmt: skip
    answer = staff.post("/layers/buildings/features", json=document, headers=KEY)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["inserted"] == 1
    assert [(r["source_id"], "Point" in r["reason"]) for r in report["rejected"]] == [("pt", True)]


def test_nothing_stored_is_422_with_the_reasons_and_changes_nothing(staff: TestClient):
    before = staff.get("/layers/buildings").json()
    points = {"type": "FeatureCollection",
              "features": [_point(f"p{i}", 121.401 + i * 1e-4) for i in range(25)]}  # fmt: skip
    answer = staff.post("/layers/buildings/features", json=points, headers=KEY)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["status"] == 422 and problem["title"] == "Unprocessable Content"
    assert problem["detail"].startswith("nothing imported into buildings: none of 25 features")
    assert "a Point cannot be a building footprint" in problem["detail"]
    assert problem["rejected_count"] == 25 and len(problem["rejected"]) == 20
    first = problem["rejected"][0]
    assert first["layer"] == "buildings" and first["source_id"] == "p0"
    assert "cannot be a building footprint" in first["reason"]
    assert problem["report"]["read"] == 25 and problem["report"]["inserted"] == 0

    upload = staff.post(
        "/layers/buildings/import",
        files={"file": ("points.geojson", json.dumps(points), "application/geo+json")},
        data={"provider": "nobody"},
        headers=KEY,
    )
    assert upload.status_code == 422, upload.text
    assert upload.json()["report"]["source"] == "points.geojson"
    after = staff.get("/layers/buildings").json()
    assert after["feature_count"] == before["feature_count"]
    assert after["provider"] == before["provider"]  # the refused import changed nothing
    names = [d["dataset"] for d in staff.get("/layers/buildings/datasets").json()["datasets"]]
    assert names == ["demo"]

    empty = staff.post(
        "/layers/sensors/features", json={"type": "FeatureCollection", "features": []}, headers=KEY
    )
    assert empty.status_code == 422 and "holds no features" in empty.json()["detail"]
