"""Intake, attach and dispatch, through the real app on a real data base: the demo city's
categories, rules and asset owners, and a city of our own whose tree skips the district
level, for precedence and escalation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.helpers import make_data_dir, settings_for
from twin import db, registry, spatial
from twin.crs import wgs84_to_gcj02
from twin.incidents import categories, intake, responsibilities

KEY = {"X-API-Key": "test-key"}
REPORTER = {"name": "王小明", "phone": "13912345678", "email": "xm@example.cn"}


@pytest.fixture
def staff(fresh_url: str) -> Iterator[TestClient]:
    settings = settings_for(make_data_dir("twin-intake-"), api={"api_keys": {"test-key": "接线员"}})
    with TestClient(create_app(settings, database_url=fresh_url)) as client:
        yield client


@pytest.fixture(scope="module")
def staff_on_demo(demo_url: str) -> Iterator[TestClient]:
    """Staff on the shared demo copy, for requests that must store nothing."""
    settings = settings_for(make_data_dir("twin-intake-"), api={"api_keys": {"test-key": "t"}})
    with TestClient(create_app(settings, database_url=demo_url)) as client:
        yield client


def _report(client: TestClient, category: str, lon: float, lat: float, **more: object):
    headers = {**KEY, **more.pop("headers", {})}  # type: ignore[dict-item]
    body = {"category": category, "channel": more.pop("channel", "hotline_12345"),
            "location": {"lon": lon, "lat": lat, **more.pop("location", {})}, **more}  # fmt: skip
    return client.post("/incidents", json=body, headers=headers)


def _water_main(url: str) -> tuple[float, float, str]:
    """A point on a demo water main owned by the water company, and the main's source id."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT ST_X(p), ST_Y(p), source_id FROM (SELECT ST_LineInterpolatePoint(geom, 0.5)"
            " AS p, source_id FROM pipes WHERE network = 'water' AND owner_unit ="
            " 'U-310199-WATERCO' ORDER BY id LIMIT 1) x"
        ).fetchone()
    assert row is not None
    return float(row[0]), float(row[1]), str(row[2])


def test_a_burst_water_main_goes_to_its_owner_and_says_why(staff: TestClient, fresh_url: str):
    lon, lat, main = _water_main(fresh_url)
    sent = _report(staff, "SJ0401", lon, lat, reporter=REPORTER, description="路面冒水")
    assert sent.status_code == 201, sent.text
    incident = sent.json()
    assert incident["status"] == "dispatched"
    assert incident["unit"] == {"code": "U-310199-WATERCO", "name": "演示区自来水公司"}
    assert incident["dispatch"]["how"] == "owner" and incident["dispatch"]["rule"]
    # The reason names the rule, the category, the place, the unit and the asset.
    reason = incident["dispatch"]["reason"]
    assert f"rule #{incident['dispatch']['rule']}" in reason and "管道爆裂" in reason
    assert "演示区自来水公司" in reason and main in reason
    nearest = incident["assets"][0]
    assert nearest["layer"] == "pipes" and nearest["source_id"] == main
    assert nearest["distance_m"] < 0.5
    assert [a["distance_m"] for a in incident["assets"]] == sorted(
        a["distance_m"] for a in incident["assets"]
    )
    levels = [j["level"] for j in incident["jurisdictions"]]
    assert levels == ["city", "district", "street", "grid", "community"]
    assert not incident["escalated"] and not incident["outside"]
    assert incident["duplicate_of"] is None and incident["version"] == 1
    assert incident["reporter"] == REPORTER  # staff see who called
    assert [e["action"] for e in incident["timeline"]] == ["reported", "dispatched"]
    assert incident["timeline"][0]["actor"] == "接线员"
    # The SLA: 管道爆裂 answers in 1 h and is resolved in 12 h.
    assert incident["due_at"]["response"] < incident["due_at"]["resolve"]
    again = staff.get(f"/incidents/{incident['id']}", headers=KEY)
    assert again.status_code == 200 and again.json()["dispatch"] == incident["dispatch"]
    assert again.headers["etag"] == '"1"'


def test_outside_every_jurisdiction_it_waits_for_a_dispatcher(staff: TestClient):
    sent = _report(staff, "SJ0401", 10.0, 50.0, channel="camera_ai")
    assert sent.status_code == 201, sent.text
    incident = sent.json()
    assert incident["outside"] and incident["status"] == "reported"
    assert incident["unit"] is None and incident["jurisdictions"] == []
    assert incident["dispatch"]["how"] == "none" and "outside" in incident["dispatch"]["reason"]
    assert [e["action"] for e in incident["timeline"]] == ["reported"]


def test_a_gcj02_point_from_a_phone_lands_where_it_was_taken(staff: TestClient, fresh_url: str):
    lon, lat, main = _water_main(fresh_url)
    glon, glat = (float(v[0]) for v in wgs84_to_gcj02(np.array([lon]), np.array([lat])))
    assert abs(glon - lon) > 0.001  # the offset is hundreds of metres: not a no-op
    sent = _report(staff, "SJ0401", glon, glat, channel="resident_photo",
                   location={"crs": "GCJ02"})  # fmt: skip
    assert sent.status_code == 201, sent.text
    incident = sent.json()
    assert incident["location"]["lon"] == pytest.approx(lon, abs=1e-5)
    assert incident["location"]["lat"] == pytest.approx(lat, abs=1e-5)
    assert incident["assets"][0]["source_id"] == main
    with psycopg.connect(fresh_url) as conn:
        chain = spatial.jurisdiction_chain(conn, lon, lat)
    assert incident["jurisdictions"] == chain


def test_a_retry_returns_the_same_incident_and_another_report_under_the_key_is_refused(
    staff: TestClient, fresh_url: str
):
    lon, lat, _ = _water_main(fresh_url)
    key = {"Idempotency-Key": "hotline-call-0001"}
    first = _report(staff, "SJ0401", lon, lat, reporter=REPORTER, headers=key)
    retry = _report(staff, "SJ0401", lon, lat, reporter=REPORTER, headers=key)
    assert first.status_code == 201 and retry.status_code == 200
    assert retry.json()["id"] == first.json()["id"]
    assert retry.headers["idempotent-replayed"] == "true"
    other = _report(staff, "SJ0401", lon, lat, description="另一件事", headers=key)
    assert other.status_code == 409 and str(first.json()["id"]) in other.json()["detail"]
    with psycopg.connect(fresh_url) as conn:
        rows = conn.execute("SELECT count(*) FROM incidents").fetchone()
    assert rows == (1,)


def test_a_dispatcher_reassigns_and_a_stale_version_is_refused(staff: TestClient):
    incident = _report(staff, "SJ0401", 10.0, 50.0).json()
    path = f"/incidents/{incident['id']}/dispatch"
    done = staff.post(path, json={"unit": "U-310199-WATER", "note": "排水管", "version": 1},
                      headers=KEY)  # fmt: skip
    assert done.status_code == 200, done.text
    after = done.json()
    assert after["status"] == "dispatched" and after["unit"]["code"] == "U-310199-WATER"
    assert after["version"] == 2 and after["dispatch"]["how"] == "manual"
    assert after["timeline"][-1]["action"] == "dispatched"
    stale = staff.post(path, json={"unit": "U-310199-ROADS", "version": 1}, headers=KEY)
    assert stale.status_code == 409 and "version 2" in stale.json()["detail"]
    moved = staff.post(path, json={"unit": "U-310199-ROADS"}, headers={**KEY, "If-Match": '"2"'})
    assert moved.status_code == 200 and moved.json()["timeline"][-1]["action"] == "reassigned"
    unknown = staff.post(path, json={"unit": "NOBODY", "version": 3}, headers=KEY)
    assert unknown.status_code == 400 and unknown.json()["parameter"] == "unit"
    missing = staff.post("/incidents/999999/dispatch", json={"unit": "U-310199-ROADS",
                                                             "version": 1}, headers=KEY)  # fmt: skip
    assert missing.status_code == 404
    unversioned = staff.post(path, json={"unit": "U-310199-ROADS"}, headers=KEY)
    assert unversioned.status_code == 400 and unversioned.json()["parameter"] == "version"


def test_tracking_shows_progress_and_no_ones_personal_data(staff: TestClient, fresh_url: str):
    lon, lat, _ = _water_main(fresh_url)
    incident = _report(staff, "SJ0401", lon, lat, reporter=REPORTER, description="我家门口").json()
    tracked = staff.get(f"/track/{incident['tracking_token']}")  # no key: public
    assert tracked.status_code == 200
    shown = tracked.json()
    assert shown["status"] == "dispatched" and shown["unit"] == {"name": "演示区自来水公司"}
    assert [s["action"] for s in shown["timeline"]] == ["reported", "dispatched"]
    for private in ("王小明", "13912345678", "xm@example.cn", "我家门口", "接线员"):
        assert private not in tracked.text
    assert staff.get("/track/not-a-token").status_code == 404
    assert staff.get(f"/incidents/{incident['id']}").status_code == 401  # staff only
    assert staff.get("/incidents").status_code == 401


def test_the_incidents_collection_hides_personal_fields(staff: TestClient, fresh_url: str):
    lon, lat, _ = _water_main(fresh_url)
    _report(staff, "SJ0401", lon, lat, reporter=REPORTER, headers={"Idempotency-Key": "k-77"})
    items = staff.get("/collections/incidents/items")
    assert items.status_code == 200, items.text
    feature = items.json()["features"][0]
    assert feature["properties"]["category_code"] == "SJ0401"
    assert feature["properties"]["unit_code"] == "U-310199-WATERCO"
    for hidden in ("reporter", "tracking_token", "idempotency_key", "payload_hash"):
        assert hidden not in feature["properties"]
    for private in ("王小明", "13912345678", "k-77"):
        assert private not in items.text
    one = staff.get(f"/collections/incidents/items/{feature['id']}")
    assert one.status_code == 200 and "13912345678" not in one.text
    queryables = staff.get("/collections/incidents/queryables").json()["properties"]
    assert "status" in queryables and "reporter" not in queryables
    sneaky = staff.get("/collections/incidents/items", params={"filter": "reporter IS NOT NULL"})
    assert sneaky.status_code == 400
    picked = staff.get("/collections/incidents/items", params={"properties": "tracking_token"})
    assert picked.status_code == 400
    described = staff.get("/layers/incidents")  # the data inventory's property schema
    assert described.status_code == 200
    schema = described.json()["property_schema"]["properties"]
    assert "status" in schema and not {"reporter", "tracking_token"} & set(schema)


def test_every_intake_is_a_change_of_the_incidents_layer(staff: TestClient, fresh_url: str):
    lon, lat, _ = _water_main(fresh_url)
    before = staff.get("/changes", params={"layer": "incidents"}).json()
    ids = [_report(staff, "SJ0401", lon + d, lat).json()["id"] for d in (0.0, 0.0005)]
    after = staff.get("/changes", params={"layer": "incidents"})
    assert after.status_code == 200, after.text
    found = after.json()
    entries = found.get("changes", found) if isinstance(found, dict) else found
    new = [c for c in entries if c not in (before.get("changes", []) if isinstance(before, dict)
                                           else before)]  # fmt: skip
    assert len(new) == 2 and all(c["operation"] == "intake" for c in new)
    west, south, east, north = new[1]["bbox"]
    assert west <= lon + 0.0005 <= east and south <= lat <= north
    with psycopg.connect(fresh_url) as conn:  # the catalogue as its readers see it
        count = registry.load(conn).entry("incidents")["feature_count"]
    assert count == len(ids)


def _own_city(conn: psycopg.Connection) -> None:
    """City C > streets S1, S2 > grid G1 in S1 (no district level), far from the demo;
    a centre for the city and for S1, none for S2 or G1."""
    places = (("C", "city", None, (100.0, 30.0, 101.0, 31.0)),
              ("S1", "street", "C", (100.0, 30.0, 100.5, 31.0)),
              ("S2", "street", "C", (100.5, 30.0, 101.0, 31.0)),
              ("G1", "grid", "S1", (100.0, 30.0, 100.25, 31.0)))  # fmt: skip
    for code, level, parent, box in places:
        conn.execute(
            "INSERT INTO jurisdictions (code, name, level, parent_code, dataset, geom) VALUES"
            " (%s, %s, %s, %s, 'own', ST_Multi(ST_MakeEnvelope(%s, %s, %s, %s, 4326)))",
            (code, f"{code} {level}", level, parent, *box),
        )
    for code, kind, place in (("C-CENTRE", "centre", "C"), ("S1-CENTRE", "centre", "S1"),
                              ("PIPES", "department", "C"), ("S1-TEAM", "team", "S1"),
                              ("G1-TEAM", "team", "G1")):  # fmt: skip
        conn.execute(
            "INSERT INTO units (code, name, kind, jurisdiction_code) VALUES (%s, %s, %s, %s)",
            (code, f"unit {code}", kind, place),
        )
    stored = categories.store(conn, [
        {"code": "P", "name": "管道", "attach_radius_m": 50, "response_hours": 1,
         "resolve_hours": 24},
        {"code": "P1", "name": "爆管", "parent_code": "P", "attach_radius_m": 50,
         "response_hours": 1, "resolve_hours": 24},
        {"code": "Q", "name": "其他", "attach_radius_m": 50, "response_hours": 2,
         "resolve_hours": 48},
    ])  # fmt: skip
    assert not stored.rejected
    rules = responsibilities.store(conn, [
        {"category_code": "P", "jurisdiction_code": "C", "unit_code": "PIPES"},
        {"category_code": "P1", "jurisdiction_code": "S1", "unit_code": "S1-TEAM"},
        {"category_code": "P", "jurisdiction_code": "G1", "unit_code": "G1-TEAM"},
    ])  # fmt: skip
    assert not rules.rejected


def test_precedence_and_escalation_in_a_city_that_skips_a_level(staff: TestClient, fresh_url: str):
    with psycopg.connect(fresh_url) as conn:
        _own_city(conn)
    in_grid, in_s2 = (100.1, 30.5), (100.7, 30.5)

    def dispatched(category: str, point: tuple[float, float]) -> dict:
        sent = _report(staff, category, *point, channel="grid_inspector")
        assert sent.status_code == 201, sent.text
        return sent.json()

    # The most specific category wins over the deepest place: P1's rule in S1 before P's
    # in G1.
    specific = dispatched("P1", in_grid)
    assert specific["unit"]["code"] == "S1-TEAM" and specific["dispatch"]["how"] == "rule"
    assert "爆管" in specific["dispatch"]["reason"]
    assert [j["level"] for j in specific["jurisdictions"]] == ["city", "street", "grid"]
    # Within one category, the deepest jurisdiction: G1's rule before C's.
    deepest = dispatched("P", in_grid)
    assert deepest["unit"]["code"] == "G1-TEAM"
    assert "G1 grid" in deepest["dispatch"]["reason"]
    assert dispatched("P", in_s2)["unit"]["code"] == "PIPES"
    # No rule: the nearest enclosing centre, from the lowest level up: S1's for the grid.
    escalated = dispatched("Q", in_grid)
    assert escalated["escalated"] and escalated["status"] == "dispatched"
    assert escalated["unit"]["code"] == "S1-CENTRE"
    assert escalated["dispatch"]["how"] == "escalation" and "S1 street" in escalated[
        "dispatch"]["reason"]  # fmt: skip
    assert escalated["timeline"][-1]["action"] == "escalated"
    # S2 has no centre of its own: the city's.
    assert dispatched("Q", in_s2)["unit"]["code"] == "C-CENTRE"
    listed = staff.get("/incidents", params={"jurisdiction": "G1"}, headers=KEY).json()
    assert {i["id"] for i in listed["incidents"]} == {specific["id"], deepest["id"],
                                                      escalated["id"]}  # fmt: skip
    assert all("reporter" not in i for i in listed["incidents"])
    page = staff.get("/incidents", params={"limit": 2}, headers=KEY).json()
    rest = staff.get("/incidents", params={"limit": 2, "after": page["next_after"]},
                     headers=KEY).json()  # fmt: skip
    assert [i["id"] for i in page["incidents"]] > [i["id"] for i in rest["incidents"]]
    assert staff.get("/incidents", params={"unit": "S1-CENTRE"}, headers=KEY).json()["count"] == 1
    assert staff.get("/incidents", params={"category": "P"}, headers=KEY).json()["count"] == 3
    # An unknown code in a filter is a 400 naming it (not an empty page, not a 404).
    for name in ("unit", "category", "jurisdiction"):
        unknown = staff.get("/incidents", params={name: "NOPE"}, headers=KEY)
        assert unknown.status_code == 400 and unknown.json()["parameter"] == name, unknown.text
    # FastAPI's own checks of a parameter name it too, in our words.
    for name, value in (("since", "yesterday"), ("limit", "abc"), ("overdue", "maybe")):
        wrong = staff.get("/incidents", params={name: value}, headers=KEY)
        assert wrong.status_code == 400 and wrong.json()["parameter"] == name, wrong.text
        assert "Input should" not in wrong.text


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ('{"category": "SJ0401", "channel": "hotline_12345", "location": {"lon": NaN, "lat": 31}}',
         "location.lon"),
        ('{"category": "SJ0401", "channel": "hotline_12345", "location": {"lon": Infinity, "lat": 31}}',
         "location.lon"),
        ('{"category": "SJ0401", "channel": "hotline_12345", "location": {"lon": 1e400, "lat": 31}}',
         "location.lon"),
        ('{"category": "SJ0401", "channel": "hotline_12345", "location": {"lon": 123456789012345678901234567890, "lat": 31}}',
         "location"),
        ('{"category": "SJ0401", "channel": "hotline_12345", "location": {"lon": "121.4", "lat": 31}}',
         "location.lon"),
        ('{"category": "SJ0401", "channel": "hotline_12345", "location": {"lon": 121.4, "lat": 131}}',
         "location"),
        ('{"category": "SJ0401", "channel": "hotline_12345", "location": {"lon": true, "lat": 31}}',
         "location.lon"),
        ('{"category": "SJ0401", "channel": "hotline_12345"}', "location"),
        ('{"category": "SJ0401", "channel": "hotline_12345", "location": [121.4, 31.2]}', None),
        ('{"category": "NOPE", "channel": "hotline_12345", "location": {"lon": 121.4, "lat": 31.2}}',
         "category"),
        ('{"category": 7, "channel": "hotline_12345", "location": {"lon": 121.4, "lat": 31.2}}',
         "category"),
        ('{"category": "SJ0401", "channel": "fax", "location": {"lon": 121.4, "lat": 31.2}}',
         "channel"),
        ('{"category": "SJ0401", "channel": "hotline_12345", "location": {"lon": 121.4, "lat": 31.2},'
         ' "description": "a\\u0000b"}', "description"),
        ('{"category": "SJ0401", "channel": "hotline_12345", "location": {"lon": 121.4, "lat": 31.2},'
         ' "reporter": {"name": "x", "ssn": "1"}}', "reporter"),
        ('{"category": "SJ0401", "channel": "hotline_12345", "location": {"lon": 121.4, "lat": 31.2,'
         ' "crs": "EPSG:999999"}}', "location.crs"),
        # Degrees sent as a projected CRS would be stored at the equator: refused, as /locate does.
        ('{"category": "SJ0401", "channel": "hotline_12345", "location": {"lon": 121.4, "lat": 31.24,'
         ' "crs": "EPSG:4549"}}', "location"),
        ('{"category": "SJ0401", "channel": "hotline_12345", "location": {"lon": 121.4, "lat": 31.2},'
         ' "reported_at": "2020-01-01T00:00:00"}', "reported_at"),
        ('{"category": "SJ0401", "channel": "hotline_12345", "location": {"lon": 121.4, "lat": 31.2},'
         ' "photo": "x"}', "photo"),
        ("[" * 100_000 + "]" * 100_000, None),
        ("not json", None),
    ],
)  # fmt: skip
def test_every_bad_report_is_a_clear_400_and_nothing_is_stored(
    staff_on_demo: TestClient, demo_url: str, body: str, parameter: str | None
):
    sent = staff_on_demo.post("/incidents", content=body.encode(),
                              headers={**KEY, "Content-Type": "application/json"})  # fmt: skip
    assert sent.status_code in (400, 413), sent.text
    assert sent.headers["content-type"] == "application/problem+json"
    if parameter is not None:
        assert sent.json()["parameter"] == parameter, sent.json()
    with psycopg.connect(demo_url) as conn:
        assert conn.execute("SELECT count(*) FROM incidents").fetchone() == (0,)


def test_long_bodies_and_script_in_a_description(staff: TestClient, fresh_url: str):
    lon, lat, _ = _water_main(fresh_url)
    huge = _report(staff, "SJ0401", lon, lat, description="x" * 100_000)
    assert huge.status_code == 413 and "KB" in huge.json()["detail"]
    long = _report(staff, "SJ0401", lon, lat, description="长" * 5000)
    assert long.status_code == 400 and long.json()["parameter"] == "description"
    script = '<script>alert("x")</script> 井盖 & 水'
    sent = _report(staff, "SJ0401", lon, lat, description=script)
    assert sent.status_code == 201 and sent.headers["content-type"] == "application/json"
    assert sent.json()["description"] == script  # kept as text, answered as data
    assert staff.post("/incidents", json={}, headers={}).status_code == 401


def test_times_off_the_calendar_are_refused_not_a_server_error(staff: TestClient):
    """A report dated year 1, or a category whose hours would carry a due time or a fusion
    window past the calendar, is a 400 naming the field (they were 500s)."""
    old = _report(staff, "SJ", 121.41, 31.23, reported_at="0001-01-01T00:00:00Z")
    assert old.status_code == 400, old.text
    assert old.json()["parameter"] == "reported_at"
    for field in ("response_hours", "resolve_hours", "fusion_hours"):
        body = {"name": "大", "parent_code": "SJ", "asset_layers": [], "attach_radius_m": 10,
                "response_hours": 1, "resolve_hours": 2, field: 1_000_000_000}  # fmt: skip
        answer = staff.put("/categories/ZZBIG", json=body, headers=KEY)
        assert answer.status_code == 400, (field, answer.text)
        assert "at most 87,600" in answer.json()["detail"]
    assert staff.get("/categories/ZZBIG").status_code == 404


def test_an_intake_commits_durably_even_where_the_server_does_not(fresh_url: str):
    # The embedded cluster runs with synchronous_commit off (for bulk loads); a report
    # answered 201 must not be lost in a crash, so the intake's commit waits for the disk.
    lon, lat, _ = _water_main(fresh_url)
    with db.connect(fresh_url, autocommit=True) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        with conn.transaction():  # the intake's own commit is this one's
            intake.report(conn, category_code="SJ0401", channel="hotline_12345", lon=lon, lat=lat)
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)


def test_a_water_main_burst_attaches_water_mains_not_the_cable_beside_them(
    staff: TestClient, fresh_url: str
):
    with psycopg.connect(fresh_url) as conn:
        # A point on a power cable with a water main within the category's radius.
        row = conn.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_LineInterpolatePoint(c.geom, 0.5) AS p"
            " FROM pipes c WHERE c.network = 'power' AND EXISTS (SELECT 1 FROM pipes w WHERE"
            " w.network = 'water' AND ST_DWithin(w.geom::geography, c.geom::geography, 40)))"
            " x WHERE EXISTS (SELECT 1 FROM jurisdictions j WHERE j.level = 'grid'"
            " AND ST_Contains(j.geom, x.p)) LIMIT 1"
        ).fetchone()
    assert row is not None
    sent = _report(staff, "SJ040101", float(row[0]), float(row[1]))  # 供水管道爆裂: pipes:water
    assert sent.status_code == 201, sent.text
    incident = sent.json()
    assert incident["assets"], incident
    with psycopg.connect(fresh_url) as conn:
        networks = {r[0] for r in conn.execute(
            "SELECT network FROM pipes WHERE id = ANY(%s)", ([a["id"] for a in incident["assets"]],))}  # fmt: skip
    assert networks == {"water"}
    assert incident["unit"] is not None, incident["dispatch"]
    assert "POWER" not in incident["dispatch"]["reason"] and "电力" not in incident["unit"]["name"]
    # The whole layer for the parent category (管道爆裂): the cable is the nearest there.
    parent = _report(staff, "SJ0401", float(row[0]), float(row[1])).json()
    assert parent["assets"][0]["distance_m"] < 1


def test_a_category_holds_only_pipe_layers_to_a_network(staff: TestClient):
    for layers, word in (("pipes:lemonade", "network"), ("buildings:water", "network")):
        put = staff.put("/categories/ZZ9", json={"name": "x", "asset_layers": layers,
                        "attach_radius_m": 30, "response_hours": 1, "resolve_hours": 2},
                        headers=KEY)  # fmt: skip
        assert put.status_code == 400 and word in put.json()["detail"], put.text
    put = staff.put("/categories/ZZ9", json={"name": "x", "asset_layers": "pipes:gas,pipe_nodes",
                    "attach_radius_m": 30, "response_hours": 1, "resolve_hours": 2}, headers=KEY)  # fmt: skip
    assert put.status_code in (200, 201) and put.json()["asset_layers"] == [
        "pipes:gas",
        "pipe_nodes",
    ]
