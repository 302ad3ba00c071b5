"""Loading data over HTTP: uploads, GeoJSON features and scenes, for staff only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
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
    settings = settings_for(make_data_dir("twin-api-"), api={"api_keys": {"test-key": "tester"}})
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
    assert again.status_code == 409 and again.json()["title"] == "Conflict"
    assert again.json()["detail"].startswith("a layer named 'ebike_theft' exists already")
    dropped = staff.delete("/scenes/ebike_theft", headers=KEY)
    assert dropped.status_code == 204 and dropped.content == b""
    assert "content-type" not in dropped.headers
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
    assert nested.status_code == 400
    assert (
        nested.json()["detail"]
        == "values: the value of 'online' must be text or a number, not a list"
    )


def test_form_fields_nested_too_deeply_or_holding_objects_are_clear_400s(staff: TestClient):
    """A RecursionError in the JSON decoder answered a plain-text 500; an object as a value
    was said not to be an object."""
    csv = "device_id,kind,lon,lat\nD-1,camera,121.4005,31.2405\n"
    for name, depth in (("mapping", 5000), ("values", 2000), ("defaults", 2000)):
        answer = staff.post(
            "/layers/sensors/import",
            files={"file": ("cameras.csv", csv, "text/csv")},
            data={name: '{"a":' * depth + "1" + "}" * depth},
            headers=KEY,
        )
        assert answer.status_code == 400, (name, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["detail"].startswith(f"{name}: nested too deeply"), answer.text
    kind = staff.post(
        "/layers/sensors/import",
        files={"file": ("cameras.csv", csv, "text/csv")},
        data={"values": '{"kind": {"a": 1}}'},
        headers=KEY,
    )
    assert kind.status_code == 400
    assert kind.json()["detail"] == (
        "values: the value of 'kind' must be text or a number, not an object"
    )
    datasets = staff.get("/layers/sensors/datasets").json()["datasets"]
    assert "cameras" not in [d["dataset"] for d in datasets]  # nothing was stored


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


# -- a layer must never break: what cannot be stored is refused whole ------------------------

GOOD_SENSOR = (
    '{"type": "Feature", "id": "ok1", "properties": {"device_id": "ok1", '
    '"kind": "smoke"}, "geometry": {"type": "Point", "coordinates": [121.401, 31.241]}}'
)
GOOD_BUILDING = (
    '{"type": "Feature", "id": "ok1", "properties": {}, "geometry": {"type": '
    '"Polygon", "coordinates": [[[121.401, 31.241], [121.4012, 31.241], '
    "[121.4012, 31.2412], [121.401, 31.241]]]}}"
)
RING = "[[121.401, 31.241], [{x}, 31.241], [121.4012, 31.2412], [121.401, 31.241]]"
BOX = "[[121.40, 31.24], [121.41, 31.24], [121.41, 31.25], [121.40, 31.25], [121.40, 31.24]]"


def _body(good: str, geometry: str, properties: str = "{}") -> str:
    """Raw JSON text, so that NaN, Infinity, 1e400 and 10**30 arrive as a client sends them."""
    bad = (f'{{"type": "Feature", "id": "bad", "properties": {properties}, '
           f'"geometry": {geometry}}}')  # fmt: skip
    return f'{{"type": "FeatureCollection", "features": [{good}, {bad}]}}'


def _stored(client: TestClient, url: str, layer: str) -> tuple[int, int]:
    """The layer's count in the catalogue and in its table."""
    listed = client.get(f"/layers/{layer}").json()["feature_count"]
    with psycopg.connect(url) as conn:
        return listed, conn.execute(f"SELECT count(*) FROM {layer}").fetchone()[0]


@pytest.mark.parametrize(
    ("layer", "geometry", "expected"),
    [
        ("sensors", '{"type": "Point", "coordinates": [NaN, 31.24]}',
         "the point: longitude NaN is not a number"),
        ("sensors", '{"type": "Point", "coordinates": [121.4, Infinity]}',
         "the point: latitude inf is not a finite number"),
        ("sensors", '{"type": "Point", "coordinates": [1e400, 31.24]}',
         "the point: longitude inf is not a finite number"),
        ("sensors", '{"type": "Point", "coordinates": [121.4, 1000000000000000000000000000000]}',
         "latitude 1e+30 is beyond ±90"),
        ("sensors", '{"type": "Point", "coordinates": [' + "9" * 400 + ', 31.24]}',
         "the point: longitude (400 digits) is too large a number"),
        ("sensors", '{"type": "Point", "coordinates": [181, 31.24]}',
         "the point: longitude 181 is beyond ±180"),
        ("sensors", '{"type": "Point", "coordinates": ["121.4", 31.24]}',
         "the point: longitude '121.4' is text, not a number"),
        ("sensors", '{"type": "Point", "coordinates": [true, 31.24]}',
         "the point: longitude True is true/false, not a number"),
        ("sensors", '{"type": "Point", "coordinates": [[121.4], 31.24]}',
         "the point: longitude [121.4] is a list, not a number"),
        ("sensors", '{"type": "MultiPoint", "coordinates": [[121.4, 31.24], [121.4, -Infinity]]}',
         "part 1: latitude -inf is not a finite number"),
        ("pipes", '{"type": "LineString", "coordinates": [[121.4, 31.24], [NaN, 31.25]]}',
         "coordinate 1: longitude NaN is not a number"),
        ("buildings", '{"type": "Polygon", "coordinates": [' + RING.format(x="NaN") + "]}",
         "coordinate 1 of ring 0: longitude NaN is not a number"),
        ("buildings", '{"type": "Polygon", "coordinates": [' + BOX + ", "
         + RING.format(x="Infinity") + "]}",
         "coordinate 1 of ring 1 (a hole): longitude inf is not a finite number"),
        ("buildings", '{"type": "MultiPolygon", "coordinates": [[' + BOX + "], [["
         "[121.4, 31.24], [121.41, 31.24], [121.41, 95], [121.4, 31.24]]]]}",
         "coordinate 2 of ring 0 of part 1: latitude 95 is beyond ±90"),
        # a hole outside its shell: GEOS's envelope is the shell's, so only every
        # coordinate tells (it was stored, and reads in EPSG:3857 then failed)
        ("buildings", '{"type": "Polygon", "coordinates": [' + BOX + ", "
         "[[121.4002, 31.2502], [121.4003, 95], [121.4004, 31.2504], [121.4002, 31.2502]]]}",
         "coordinate 1 of ring 1 (a hole): latitude 95 is beyond ±90"),
        ("buildings", '{"type": "Polygon", "coordinates": [' + BOX + ", "
         "[[121.4002, 31.2502], [200, 31.25], [121.4004, 31.2504], [121.4002, 31.2502]]]}",
         "coordinate 1 of ring 1 (a hole): longitude 200 is beyond ±180"),
    ],
)  # fmt: skip
def test_a_body_with_a_coordinate_that_cannot_be_stored_is_refused_whole(
    staff: TestClient, fresh_url: str, layer: str, geometry: str, expected: str
):
    """POST /layers/sensors/features with [NaN, 31.24] answered 200 and stored it, and every
    read of the layer answered 500 after. Now the body is refused, naming the feature and
    the coordinate, and nothing of it (the good feature either) is stored."""
    good = {"sensors": GOOD_SENSOR, "buildings": GOOD_BUILDING}.get(layer)
    if layer == "pipes":
        good = GOOD_SENSOR.replace(
            '"Point", "coordinates": [121.401, 31.241]',
            '"LineString", "coordinates": [[121.4, 31.24], [121.41, 31.24]]',
        )
        good = good.replace('"kind": "smoke"', '"network": "water"')  # fmt: skip
    before = _stored(staff, fresh_url, layer)
    with psycopg.connect(fresh_url) as conn:
        datasets = conn.execute("SELECT count(*) FROM dataset_inventory").fetchone()[0]
    answer = staff.post(
        f"/layers/{layer}/features",
        content=_body(good, geometry),
        headers={**KEY, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    detail = answer.json()["detail"]
    assert "features[1] (id 'bad')" in detail and expected in detail, detail
    assert "features[0]" not in detail
    assert _stored(staff, fresh_url, layer) == before
    with psycopg.connect(fresh_url) as conn:
        assert conn.execute("SELECT count(*) FROM dataset_inventory").fetchone()[0] == datasets
    assert staff.get(f"/collections/{layer}/items?limit=1").status_code == 200


def test_a_projected_body_off_its_zone_is_refused_naming_x_and_y(staff: TestClient, fresh_url):
    geometry = '{"type": "Point", "coordinates": [500000000000, 3458440]}'
    good = GOOD_SENSOR.replace("121.401, 31.241", "633390, 3458440")
    before = _stored(staff, fresh_url, "sensors")
    answer = staff.post(
        "/layers/sensors/features?crs=EPSG:4549",
        content=_body(good, geometry),
        headers={**KEY, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert "features[1] (id 'bad')" in detail and "x 500000000000, y 3458440" in detail
    assert _stored(staff, fresh_url, "sensors") == before
    nan = staff.post(
        "/layers/sensors/features?crs=EPSG:4549",
        content=_body(good, '{"type": "Point", "coordinates": [NaN, 3458440]}'),
        headers={**KEY, "Content-Type": "application/json"},
    )
    assert nan.status_code == 400 and "the point: x NaN is not a number" in nan.json()["detail"]


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ('{"device_id": "bad", "kind": "smoke", "note": "a\\u0000b"}',
         "note: its value holds a NUL character"),
        ('{"device_id": "bad", "kind": "smoke", "no\\u0000te": "x"}',
         "field name 'no\\x00te' holds a NUL character"),
        ('{"device_id": "b\\u0000d", "kind": "smoke"}', "device_id: its value holds a NUL"),
        ('{"device_id": "bad", "kind": "smoke", "deep": {"a": ["x", {"k\\u0000": 1}]}}',
         "deep: a key in its value holds a NUL character"),
        ('{"device_id": "bad", "kind": "smoke", "deep": ' + "[" * 200 + "]" * 200 + "}",
         "deep: its value nests lists or objects more than 32 deep"),
    ],
)  # fmt: skip
def test_a_body_with_a_value_the_data_base_cannot_take_is_refused_whole(
    staff: TestClient, fresh_url: str, properties: str, expected: str
):
    before = _stored(staff, fresh_url, "sensors")
    answer = staff.post(
        "/layers/sensors/features",
        content=_body(GOOD_SENSOR, '{"type": "Point", "coordinates": [121.402, 31.242]}',
                      properties),
        headers={**KEY, "Content-Type": "application/json"},
    )  # fmt: skip
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert "features[1] (id 'bad')" in detail and expected in detail, detail
    assert _stored(staff, fresh_url, "sensors") == before


def test_numbers_a_column_cannot_hold_are_kept_aside_and_counted(staff: TestClient):
    """floors 10**20 (an int4 column), NaN and 1e400 thresholds: emptied with a note."""
    body = ('{"type": "FeatureCollection", "features": ['
            '{"type": "Feature", "id": "n1", "properties": {"device_id": "n1", "kind": "smoke",'
            ' "threshold_high": NaN, "threshold_low": 1e400, "big": 100000000000000000000000,'
            ' "list": [1, NaN]}, "geometry": {"type": "Point", "coordinates": [121.402, 31.242]}}]}')  # fmt: skip
    answer = staff.post("/layers/sensors/features", content=body,
                        headers={**KEY, "Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    notes = " ".join(answer.json()["notes"])
    assert "1 values of threshold_high -> threshold_high emptied" in notes
    assert answer.json()["emptied"] == {"threshold_high": 1}
    assert "1 values of threshold_low -> threshold_low not understood" in notes
    item = staff.get("/collections/sensors/items?device_id=n1")
    assert item.status_code == 200, item.text
    floors = ('{"type": "FeatureCollection", "features": [{"type": "Feature", "id": "f1", '
              '"properties": {"floors": 100000000000000000000}, "geometry": {"type": "Polygon", '
              '"coordinates": [' + RING.format(x="121.4012") + "]}}]}")  # fmt: skip
    answer = staff.post("/layers/buildings/features", content=floors,
                        headers={**KEY, "Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert "more floors than any building has" in " ".join(answer.json()["notes"])


def test_implausible_heights_depths_and_elevations_are_kept_aside_not_stored(staff: TestClient):
    """A 1e30 m building was stored; 1e400 was noted "not understood" but kept as null."""
    huge = "9" * 400
    features = [
        ("h30", '"height_m": 1e30'), ("h400", '"height_m": 1e400'),
        ("hbig", f'"height_m": {huge}'), ("e", '"base_elevation_m": -20000'),
        ("ok", '"height_m": 828, "base_elevation_m": -430'),
    ]  # fmt: skip
    body = ('{"type": "FeatureCollection", "features": [' + ", ".join(
        f'{{"type": "Feature", "id": "{fid}", "properties": {{{properties}}}, "geometry": '
        f'{{"type": "Polygon", "coordinates": [{RING.format(x=121.4012 + i * 0.001)}]}}}}'
        for i, (fid, properties) in enumerate(features)) + "]}")  # fmt: skip
    answer = staff.post("/layers/buildings/features", content=body,
                        headers={**KEY, "Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["inserted"] == 5 and not answer.json()["rejected"]
    notes = " ".join(answer.json()["notes"])
    assert "3 values of height_m -> height_m not understood (kept in properties)" in notes
    assert "taller than any building (over 1,000 m): 1e+30" in notes
    assert "1 values of base_elevation_m -> base_elevation_m not understood" in notes
    got = staff.get("/collections/buildings/items?dataset=api&limit=100").json()["features"]
    by_source = {f["properties"]["source_id"]: f["properties"] for f in got}
    assert by_source["h30"]["height_m"] is None
    assert by_source["h30"]["height_m_raw"] == 1e30  # kept as given, beside the field
    assert by_source["h400"]["height_m_raw"] == "1e400"  # as written: JSON has no infinity
    assert by_source["hbig"]["height_m_raw"] == int(huge)
    # The refused value is kept aside; the base is the ground's, from the demo's DEM.
    assert by_source["e"]["base_elevation_m"] is not None
    assert -10 < by_source["e"]["base_elevation_m"] < 100
    assert by_source["e"]["base_elevation_m_raw"] == -20000
    assert (by_source["ok"]["height_m"], by_source["ok"]["base_elevation_m"]) == (828, -430)


def test_bodies_too_deep_or_not_json_get_a_clear_400_too_large_413(
    staff: TestClient, monkeypatch: pytest.MonkeyPatch
):
    headers = {**KEY, "Content-Type": "application/json"}
    deep = staff.post("/layers/sensors/features", content="[" * 100_000 + "]" * 100_000,
                      headers=headers)  # fmt: skip
    assert deep.status_code == 400 and deep.headers["content-type"] == "application/problem+json"
    assert "too deep" in deep.json()["detail"]
    broken = staff.post("/layers/sensors/features", content='{"type": "Feat', headers=headers)
    assert broken.status_code == 400 and "not JSON" in broken.json()["detail"]
    monkeypatch.setattr("api.routes.imports.MAX_BODY_MB", 1)
    huge = json.dumps({**POINTS, "padding": "x" * 2_000_000})
    large = staff.post("/layers/sensors/features", content=huge, headers=headers)
    assert large.status_code == 413 and "larger than 1 MB" in large.json()["detail"]
    assert large.headers["content-type"] == "application/problem+json"
    assert large.json()["title"] == "Content Too Large"
    # Without a Content-Length (chunked): read up to the limit, then cut.
    streamed = staff.post(
        "/layers/sensors/features", content=iter([huge.encode()]), headers=headers
    )
    assert streamed.status_code == 413, streamed.text


def test_an_import_over_the_import_time_limit_is_stopped_and_stores_nothing(
    staff: TestClient, fresh_url: str
):
    """TWIN_IMPORT_TIME_LIMIT_S, not the 5 s per-statement limit, bounds an import."""
    with psycopg.connect(fresh_url) as conn:  # every insert into sensors takes 2 s
        conn.execute("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$")  # fmt: skip
        conn.execute("CREATE TRIGGER slow BEFORE INSERT ON sensors "
                     "FOR EACH STATEMENT EXECUTE FUNCTION slow()")  # fmt: skip
    sensor = f'{{"type": "FeatureCollection", "features": [{GOOD_SENSOR}]}}'
    headers = {**KEY, "Content-Type": "application/json"}
    before = _stored(staff, fresh_url, "sensors")
    settings = settings_for(make_data_dir("twin-api-"), api={"api_keys": {"test-key": "tester"}},
                            imports={"import_time_limit_s": 1})  # fmt: skip
    with TestClient(create_app(settings, database_url=fresh_url)) as hurried:
        cut = hurried.post("/layers/sensors/features", content=sensor, headers=headers)
    assert cut.status_code == 503, cut.text
    assert "ran past its time limit (1 s, TWIN_IMPORT_TIME_LIMIT_S)" in cut.json()["detail"]
    assert _stored(staff, fresh_url, "sensors") == before
    # The default limit (15 minutes) lets the same slow import through.
    answer = staff.post("/layers/sensors/features", content=sensor, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["inserted"] == 1


def test_an_upload_over_the_limit_is_413_saying_the_limit(fresh_url: str):
    settings = settings_for(make_data_dir("twin-api-"), api={"api_keys": {"test-key": "tester"}},
                            imports={"max_upload_mb": 1})  # fmt: skip
    with TestClient(create_app(settings, database_url=fresh_url)) as client:
        big = "device_id,kind,lon,lat\n" + "c1,camera,121.4005,31.2405\n" * 50_000
        answer = client.post("/layers/sensors/import", files={"file": ("big.csv", big)},
                             headers=KEY)  # fmt: skip
    assert answer.status_code == 413, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert (
        "larger than 1 MB, the most an upload may be (TWIN_MAX_UPLOAD_MB)"
        in (answer.json()["detail"])
    )


def test_nul_characters_in_options_and_names_are_refused_clearly(staff: TestClient, tmp_path: Path):
    nul_dataset = staff.post("/layers/sensors/features?dataset=a%00b", json=POINTS, headers=KEY)
    assert nul_dataset.status_code == 400 and "NUL" in nul_dataset.json()["detail"]
    csv = b"device_id,kind,lon,lat\nc1,camera,121.401,31.241\n"
    for form in ({"provider": "a\x00b"}, {"licence": "x\x00"}, {"dataset": "d\x00"},
                 {"mapping": '{"kind": "k\\u0000"}'}, {"values": '{"kind": "\\u0000"}'}):  # fmt: skip
        answer = staff.post("/layers/sensors/import", files={"file": ("cams.csv", csv)},
                            data=form, headers=KEY)  # fmt: skip
        assert answer.status_code == 400, (form, answer.text)
        assert "NUL character" in answer.json()["detail"], answer.text
    gone = staff.delete("/layers/buildings/datasets/a%00b", headers=KEY)
    assert gone.status_code == 400 and "NUL" in gone.json()["detail"]
    scene = staff.post("/scenes", json={"name": "nul_scene", "geometry_type": "Point",
                                        "title": "a\x00b"}, headers=KEY)  # fmt: skip
    assert scene.status_code == 400 and "NUL" in scene.json()["detail"]


def test_an_uploaded_geojson_file_with_nul_characters_rejects_those_features(staff: TestClient):
    """GDAL cut "a\\u0000b" to "a" and the feature was stored; now it is rejected naming
    the field, as in a CSV, and the rest is stored."""
    ring = "[[[121.40, 31.24], [121.4002, 31.24], [121.4002, 31.2402], [121.40, 31.24]]]"
    text = ('{"type": "FeatureCollection", "features": ['
            '{"type": "Feature", "properties": {"id": "bad", "name": "a\\u0000b",'
            ' "address": "x\\u0000y"}, "geometry": {"type": "Polygon", "coordinates": '
            + ring + '}}, {"type": "Feature", "properties": {"id": "good", "name": "b"},'
            ' "geometry": {"type": "Polygon", "coordinates": ' + ring + "}}]}")  # fmt: skip
    for name in ("nul.geojson", "nul.json"):
        answer = staff.post("/layers/buildings/import", files={"file": (name, text)},
                            headers=KEY)  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.json()["rejected"] == [{
            "source_id": "bad",
            "reason": "name: its value holds a NUL character (\\0), which cannot be stored",
        }]  # fmt: skip
    names = {f["properties"]["name"] for f in
             staff.get("/collections/buildings/items?dataset=nul").json()["features"]}  # fmt: skip
    assert names == {"b"}


def test_an_uploaded_file_with_bad_coordinates_and_values_keeps_the_rest(staff: TestClient):
    """A file (not a body): each feature that cannot be stored is rejected with its id and
    why, naming the coordinate or the field; the rest is imported."""
    csv = ("device_id,kind,note,lon,lat\n"
           "ok1,camera,gate,121.401,31.241\n"
           "nan1,camera,,NaN,31.24\n"
           "inf1,camera,,121.4,1e400\n"
           "far1,camera,,121.4,95\n"
           "nul1,camera,a\x00b,121.402,31.242\n"
           "ok2,camera,,121.403,31.243\n")  # fmt: skip
    answer = staff.post("/layers/sensors/import",
                        files={"file": ("cams.csv", csv.encode())}, headers=KEY)  # fmt: skip
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["inserted"] == 2
    reasons = {r["source_id"]: r["reason"] for r in report["rejected"]}
    assert reasons == {
        "nan1": "lon 'NaN' is not a number",
        "inf1": "lat '1e400' is not a finite number",
        "far1": "coordinates cannot be in EPSG:4326: the point: latitude 95 is beyond ±90",
        "nul1": "note: its value holds a NUL character (\\0), which cannot be stored",
    }
    assert staff.get("/collections/sensors/items?limit=1000").status_code == 200


def test_a_posted_polygon_whose_ring_is_not_closed_is_refused_naming_it(staff: TestClient):
    open_ring = [[121.40, 31.24], [121.41, 31.24], [121.41, 31.25], [121.40, 31.25]]
    body = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "open", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [open_ring]}}]}  # fmt: skip
    before = staff.get("/layers/buildings").json()["feature_count"]
    answer = staff.post("/layers/buildings/features", json=body, headers=KEY)
    assert answer.status_code in (400, 422), answer.text
    assert "ring 0 is not closed" in answer.text
    assert staff.get("/layers/buildings").json()["feature_count"] == before


def test_posted_features_with_ids_are_matched_by_them_without_a_row_warning(staff: TestClient):
    body = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": f"s-{i}", "properties": {"device_id": f"cam-{i}", "kind": "camera"},
         "geometry": {"type": "Point", "coordinates": [121.40 + i / 1000, 31.24]}} for i in range(2)]}  # fmt: skip
    first = staff.post("/layers/sensors/features", json=body, headers=KEY)
    assert first.status_code == 200, first.text
    assert not any("no source id" in note for note in first.json()["notes"])
    again = staff.post("/layers/sensors/features", json=body, headers=KEY).json()
    assert again["inserted"] == 0 and again["updated"] == 2


def test_one_posted_feature_with_one_bad_vertex_is_told_of_that_vertex_not_of_a_crs(
    staff: TestClient,
):
    line = {"type": "Feature", "id": "bad", "properties": {"network": "water"},
            "geometry": {"type": "LineString", "coordinates": [[121.40, 31.24], [121.401, 95]]}}  # fmt: skip
    answer = staff.post("/layers/pipes/features", json=line, headers=KEY)
    assert answer.status_code in (400, 422), answer.text
    assert "coordinate 1: latitude 95 is beyond ±90" in answer.text
    assert "does not say its CRS" not in answer.text


# -- the staff doors answer in our words, and refuse what they do not take -------------------

CAMS = b"device_id,kind,lon,lat\nc1,camera,121.401,31.241\n"


def _upload(client: TestClient, data: dict | None = None, name: str = "cams.csv",
            content: bytes | str = CAMS, **kwargs):  # fmt: skip
    return client.post("/layers/sensors/import", files={"file": (name, content)}, data=data,
                       headers=KEY, **kwargs)  # fmt: skip


def _datasets(client: TestClient) -> list[str]:
    return [d["dataset"] for d in client.get("/layers/sensors/datasets").json()["datasets"]]


def test_library_words_never_reach_the_client(staff: TestClient):
    """python-multipart's, FastAPI's, Python's JSON reader's, pydantic's and GDAL's messages
    were passed on as they were."""
    answers = {
        "field": _upload(staff, {"provider": "x" * 5_000_000}),
        "urlencoded": staff.post("/layers/sensors/import", data={"file": "abc"}, headers=KEY),
        "text file": staff.post(
            "/layers/sensors/import", files={"file": (None, "abc")}, headers=KEY
        ),
        "mapping": _upload(staff, {"mapping": "{a}"}),
        "scene": staff.post("/scenes", json={"name": "Bad", "geometry_type": "Point"}, headers=KEY),
        "nested": _upload(
            staff,
            name="deep.geojson",
            content=(
                '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": '
                '{"a": ' + "[" * 2000 + "]" * 2000 + '}, "geometry": {"type": "Point", '
                '"coordinates": [121.4, 31.2]}}]}'
            ),
        ),
        "body": staff.post(
            "/layers/sensors/features",
            content='{"type": "Feature",\n "id" 1}',
            headers={**KEY, "Content-Type": "application/json"},
        ),
    }
    for what, answer in answers.items():
        assert answer.headers["content-type"] == "application/problem+json", what
        for words in ("KB.", "UploadFile", "<class", "Expecting", "(char", "should match",
                      "GDAL", "GeoJSON data", "Too many nested"):  # fmt: skip
            assert words not in answer.json()["detail"], (what, answer.text)
    detail = {what: answer.json()["detail"] for what, answer in answers.items()}
    assert answers["field"].status_code == 413
    assert detail["field"].startswith("a form field is larger than 1 MB")
    assert answers["urlencoded"].status_code == 400
    assert "multipart form" in detail["urlencoded"] and "file=@" in detail["urlencoded"]
    assert answers["text file"].status_code == 400
    assert detail["text file"].startswith("form field file holds text, not a file")
    assert detail["mapping"] == (
        "mapping is not JSON: at character 2, a field name must be in double quotes; "
        'give a JSON object such as {"height_m": "GAODU"}'
    )
    assert detail["scene"] == (
        "scene name 'Bad': use 2-40 lower-case letters, digits or _, starting with a letter"
    )
    assert detail["nested"].startswith("cannot read deep.geojson: it nests lists or objects too")
    assert detail["body"] == (
        "the request body is not JSON: on line 2, column 7, a colon is missing after a field name"
    )
    assert all(a.status_code == 400 for w, a in answers.items() if w != "field")
    assert "cams" not in _datasets(staff)  # nothing of it was stored


def test_fields_the_import_doors_do_not_take_are_refused_naming_them(staff: TestClient):
    """An unknown or repeated form field, a layer a CSV does not have, an unknown field of a
    scene or query parameter were taken silently (a repeated field: the last won)."""
    unknown = _upload(staff, {"foo": "1"})
    assert unknown.status_code == 400
    assert unknown.json()["detail"] == (
        "unknown form field 'foo'; the upload takes file, dataset, crs, layer, mapping, "
        "values, defaults, provider, owner_unit, licence, update_cadence"
    )
    twice = _upload(staff, {"dataset": ["a", "b"]})
    assert twice.status_code == 400
    assert twice.json()["detail"] == "form field 'dataset' is given more than once; give it once"
    query = _upload(staff, params={"dataset": "a"})
    assert query.status_code == 400 and "as form fields (dataset, crs" in query.json()["detail"]
    nope = _upload(staff, {"layer": "nope"})
    assert nope.status_code == 400
    assert nope.json()["detail"] == (
        "cams.csv has no layer 'nope': a CSV file has one layer, 'cams'; leave the layer out"
        " (parameter layer)"
    )
    assert nope.json()["parameter"] == "layer"
    assert _datasets(staff) == ["demo"]  # neither cams nor cams:nope
    own = _upload(staff, {"layer": "cams"})  # the file's own layer is its layer
    assert own.status_code == 200, own.text
    scene = staff.post("/scenes", json={"name": "okay", "geometry_type": "Point", "foo": 1},
                       headers=KEY)  # fmt: skip
    assert scene.status_code == 400
    assert scene.json()["detail"] == (
        "body: unknown field 'foo'; a scene takes name, geometry_type, properties, title, "
        "owner_unit, description"
    )
    assert staff.get("/layers/okay").status_code == 404
    features = staff.post("/layers/sensors/features?foo=1", json=POINTS, headers=KEY)
    assert features.status_code == 400
    assert features.json()["detail"] == (
        "unknown query parameter 'foo'; POST /layers/sensors/features takes crs, dataset"
    )


@pytest.mark.parametrize("control", ["\x01", "\t", "\n", "\x1f", "\x7f"])
def test_control_characters_in_names_and_the_inventory_are_refused(staff: TestClient, control: str):
    words = {"dataset": "the dataset", "provider": "the provider", "owner_unit": "the owner",
             "licence": "the licence", "update_cadence": "the update cadence"}  # fmt: skip
    for field, what in words.items():
        answer = _upload(staff, {field: f"a{control}b"})
        assert answer.status_code == 400, (field, answer.text)
        assert answer.json()["detail"] == (
            f"{what} holds a control character ({control!r} at character 2), which a name "
            f"may not hold: {'a' + control + 'b'!r} (parameter {field})"
        )
        assert answer.json()["parameter"] == field
    body = staff.post("/layers/sensors/features", params={"dataset": f"x{control}"},
                      json=POINTS, headers=KEY)  # fmt: skip
    assert body.status_code == 400 and "control character" in body.json()["detail"]
    for field in ("title", "owner_unit"):
        scene = staff.post("/scenes", json={"name": "ctl", "geometry_type": "Point",
                                            field: f"a{control}"}, headers=KEY)  # fmt: skip
        assert scene.status_code == 400 and "control character" in scene.json()["detail"]
    assert _datasets(staff) == ["demo"] and staff.get("/layers/ctl").status_code == 404


def test_a_scenes_large_integers_are_compared_exactly(staff: TestClient):
    scene = {"name": "crowds", "geometry_type": "Point", "properties": {"count": "integer"}}
    assert staff.post("/scenes", json=scene, headers=KEY).status_code == 201
    big = 2**62
    body = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": str(n), "properties": {"count": n},
         "geometry": {"type": "Point", "coordinates": [121.40, 31.24]}} for n in (big, big - 1)]}  # fmt: skip
    assert staff.post("/layers/crowds/features", json=body, headers=KEY).status_code == 200
    above = staff.get(f"/collections/crowds/items?filter=count > {big - 1}").json()
    assert [f["properties"]["count"] for f in above["features"]] == [big]
    assert (
        staff.get(f"/collections/crowds/items?filter=count = {big - 1}").json()["numberMatched"]
        == 1
    )


def test_a_wrong_input_is_named_as_this_door_calls_it_not_as_the_cli_does(staff: TestClient):
    """The core says which input was wrong; over HTTP it is the parameter, never a flag."""
    projected = "id,x,y\nc1,450000,3460000\n"  # metres, and the file does not say its CRS
    answer = _upload(staff, name="metres.csv", content=projected)
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert "does not say its CRS" in detail and detail.endswith("(parameter crs)")
    assert "--crs" not in detail and "over HTTP" not in detail
    nul = _upload(staff, {"values": '{"kind": "smoke\\u0000"}'})
    assert nul.status_code == 400 and nul.json()["parameter"] == "values"
    assert "--set" not in nul.json()["detail"]
