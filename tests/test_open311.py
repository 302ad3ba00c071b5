"""Open311 GeoReport v2 as a 311 client uses it, through the real app on a real data base:
the service list, a request posted with a key, read back by id, by token and in lists
with the spec's filters, in JSON and in XML (read with ElementTree), and the spec's error
documents; no one's personal data in any GET, script text kept as text in XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.helpers import make_data_dir, settings_for

KEY = "311-key"
V2 = "/open311/v2"
FORM = {"api_key": KEY, "service_code": "BJ0101", "first_name": "王", "last_name": "小明",
        "email": "xm@example.cn", "phone": "13912345678", "address_string": "长寿路 1 号",
        "description": "井盖不见了 <script>alert('x')</script> & more"}  # fmt: skip
PERSONAL = ("王", "小明", "xm@example.cn", "13912345678")


@pytest.fixture
def client(fresh_url: str) -> Iterator[TestClient]:
    settings = settings_for(make_data_dir("twin-311-"), api={"api_keys": {KEY: "12345 热线"}})
    with TestClient(create_app(settings, database_url=fresh_url)) as client:
        yield client


@pytest.fixture(scope="module")
def on_demo(demo_url: str) -> Iterator[TestClient]:
    """On the shared demo copy, for requests that must store nothing."""
    settings = settings_for(make_data_dir("twin-311-"), api={"api_keys": {KEY: "t"}})
    with TestClient(create_app(settings, database_url=demo_url)) as client:
        yield client


def _place(url: str) -> tuple[float, float]:
    """A point inside the demo city's grids (where every report is dispatched)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p"
            " FROM jurisdictions WHERE level = 'grid' ORDER BY code LIMIT 1) x"
        ).fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


def _xml(response) -> ET.Element:  # type: ignore[no-untyped-def]
    assert response.headers["content-type"].startswith("text/xml")
    assert response.content.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    return ET.fromstring(response.content)


def _errors(response, status: int) -> str:  # type: ignore[no-untyped-def]
    """The description of the spec's error document, checked in whichever format."""
    assert response.status_code == status, response.text
    if response.headers["content-type"].startswith("text/xml"):
        root = _xml(response)
        assert root.tag == "errors"
        (error,) = root.findall("error")
        assert error.findtext("code") == str(status)
        return error.findtext("description") or ""
    (error,) = response.json()
    assert error["code"] == status
    return str(error["description"])


def test_services_are_the_categories_in_both_formats(on_demo: TestClient):
    listed = on_demo.get(f"{V2}/services.json")
    assert listed.status_code == 200 and listed.headers["content-type"].startswith(
        "application/json"
    )
    services = {s["service_code"]: s for s in listed.json()}
    manhole = services["BJ0101"]
    assert manhole["metadata"] is False and manhole["type"] == "realtime"
    assert manhole["group"] == "公用设施" and manhole["service_name"]
    assert "部件" in manhole["keywords"] and "h" in manhole["description"]
    assert "BJ" not in services and "BJ01" not in services  # groups, not services
    root = _xml(on_demo.get(f"{V2}/services.xml", params={"jurisdiction_id": "putuo"}))
    assert root.tag == "services"
    codes = [s.findtext("service_code") for s in root.findall("service")]
    assert sorted(codes) == sorted(services)
    first = root.find("service")
    assert first is not None and first.findtext("metadata") == "false"
    definition = on_demo.get(f"{V2}/services/BJ0101.json").json()
    assert definition == {"service_code": "BJ0101", "attributes": []}
    root = _xml(on_demo.get(f"{V2}/services/BJ0101.xml"))
    assert root.tag == "service_definition" and root.findtext("service_code") == "BJ0101"
    assert "not a service" in _errors(on_demo.get(f"{V2}/services/NOPE.xml"), 404)


def test_a_311_client_round_trip_in_json(client: TestClient, fresh_url: str):
    lon, lat = _place(fresh_url)
    posted = client.post(f"{V2}/requests.json", data={**FORM, "lat": str(lat), "long": str(lon),
                         "media_url": "https://photos.example.cn/1.jpg", "account_id": "A-7"})  # fmt: skip
    assert posted.status_code == 201, posted.text
    (created,) = posted.json()
    request_id, token = created["service_request_id"], created["token"]
    assert isinstance(request_id, int) and token
    assert created["account_id"] == "A-7" and created["service_notice"]
    assert posted.headers["Location"] == f"{V2}/requests/{request_id}.json"

    one = client.get(f"{V2}/requests/{request_id}.json")
    assert one.status_code == 200
    (got,) = one.json()  # the spec answers a list of one
    assert got["service_request_id"] == request_id and got["status"] == "open"
    assert got["service_code"] == "BJ0101" and got["agency_responsible"]
    assert got["lat"] == pytest.approx(lat) and got["long"] == pytest.approx(lon)
    assert got["media_url"] == "https://photos.example.cn/1.jpg"
    assert got["address"] == "长寿路 1 号" and got["status_notes"]
    assert got["requested_datetime"].endswith("Z") and got["expected_datetime"]
    assert got["description"] == ""  # a resident's text: not for the public
    for word in PERSONAL:
        assert word not in one.text
    # A caller with a key reads the description.
    keyed = client.get(f"{V2}/requests/{request_id}.json", headers={"X-API-Key": KEY})
    assert keyed.json()[0]["description"] == FORM["description"]
    # … within its scope only: another unit's staff read no description.
    unit = client.get(f"/incidents/{request_id}", headers={"X-API-Key": KEY}).json()["unit"]["code"]
    with psycopg.connect(fresh_url) as conn:
        other = conn.execute("SELECT code FROM units WHERE code <> %s LIMIT 1", (unit,)).fetchone()
    made = client.post("/keys", json={"name": "别的单位", "role": "unit_staff", "unit": other[0]},
                       headers={"X-API-Key": KEY})  # fmt: skip
    outsider = client.get(f"{V2}/requests/{request_id}.json",
                          headers={"X-API-Key": made.json()["key"]})  # fmt: skip
    assert outsider.status_code == 200 and outsider.json()[0]["description"] == ""

    by_token = client.get(f"{V2}/tokens/{token}.json").json()
    assert by_token == [{"service_request_id": request_id, "token": token}]

    # The incident itself: the external system's channel, the reporter kept for staff.
    staff = client.get(f"/incidents/{request_id}", headers={"X-API-Key": KEY}).json()
    assert staff["channel"] == "external_system"
    assert staff["reporter"] == {"name": "王 小明", "phone": "13912345678",
                                 "email": "xm@example.cn"}  # fmt: skip
    notes = {e["action"]: e["note"] for e in staff["timeline"]}
    assert notes["media_attached"] == "https://photos.example.cn/1.jpg"
    assert "account_id=A-7" in notes["received_from"]

    # Lists with the spec's filters.
    def ids(**params: str) -> list[int]:
        answer = client.get(f"{V2}/requests.json", params=params)
        assert answer.status_code == 200, answer.text
        for word in PERSONAL:
            assert word not in answer.text
        return [r["service_request_id"] for r in answer.json()]

    assert request_id in ids()
    assert request_id in ids(service_code="BJ0101,BJ0102", status="open")
    assert request_id in ids(service_code="BJ01")  # a group takes its services
    assert request_id not in ids(service_code="BJ0102")
    assert request_id not in ids(status="closed")
    now = datetime.now(UTC)
    start = (now - timedelta(hours=1)).isoformat(timespec="seconds")
    assert request_id in ids(start_date=start, end_date=(now + timedelta(hours=1)).isoformat())
    assert request_id not in ids(end_date=(now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert ids(service_request_id=f"{request_id},999999") == [request_id]


def test_a_311_client_round_trip_in_xml_keeps_script_as_text(client: TestClient, fresh_url: str):
    lon, lat = _place(fresh_url)
    posted = client.post(f"{V2}/requests.xml", data={**FORM, "lat": str(lat), "long": str(lon)})
    assert posted.status_code == 201, posted.text
    root = _xml(posted)
    assert root.tag == "service_requests"
    (created,) = root.findall("request")
    request_id = created.findtext("service_request_id")
    token = created.findtext("token")
    assert request_id and request_id.isdigit() and token
    assert created.find("account_id") is not None and not created.findtext("account_id")

    keyed = client.get(f"{V2}/requests/{request_id}.xml", params={"api_key": KEY})
    assert b"<script>" not in keyed.content and b"&lt;script&gt;" in keyed.content
    (got,) = _xml(keyed).findall("request")
    assert got.findtext("description") == FORM["description"]  # the same text, escaped
    assert got.findtext("status") == "open" and got.findtext("service_code") == "BJ0101"
    assert float(got.findtext("lat") or "nan") == pytest.approx(lat)
    fields = [child.tag for child in got]
    assert fields[:3] == ["service_request_id", "status", "status_notes"]
    assert "long" in fields and "media_url" in fields

    public = client.get(f"{V2}/requests.xml", params={"status": "open,closed"})
    for word in PERSONAL:
        assert word not in public.content.decode()
    listed = [r.findtext("service_request_id") for r in _xml(public).findall("request")]
    assert request_id in listed
    (tok,) = _xml(client.get(f"{V2}/tokens/{token}.xml")).findall("request")
    assert tok.findtext("service_request_id") == request_id and tok.findtext("token") == token


def test_a_fused_report_keeps_its_own_id_and_reads_as_the_request_it_joined(
    client: TestClient, fresh_url: str
):
    lon, lat = _place(fresh_url)
    form = {**FORM, "lat": str(lat), "long": str(lon)}
    first = client.post(f"{V2}/requests.json", data=form).json()[0]
    second = client.post(f"{V2}/requests.json", data={**form, "lat": str(lat + 0.00005)})
    assert second.status_code == 201, second.text
    joined = second.json()[0]
    assert joined["service_request_id"] != first["service_request_id"]
    assert str(first["service_request_id"]) in joined["service_notice"]
    (got,) = client.get(f"{V2}/requests/{joined['service_request_id']}.json").json()
    assert got["status"] == "open"  # the problem is still being fixed
    assert str(first["service_request_id"]) in got["status_notes"]
    # Its joining in its own words, not the joined request's ("another report ... joined
    # this request" read as if said of the duplicate).
    assert got["status_notes"].endswith("this report joined it"), got["status_notes"]
    listed = client.get(f"{V2}/requests.json", params={"status": "open"}).json()
    assert {r["service_request_id"] for r in listed} >= {
        first["service_request_id"], joined["service_request_id"]
    }  # fmt: skip
    # Closed once the original is cancelled.
    original = client.get(f"/incidents/{first['service_request_id']}", headers={"X-API-Key": KEY})
    cancel = client.post(
        f"/incidents/{first['service_request_id']}/transitions", headers={"X-API-Key": KEY},
        json={"action": "cancel", "note": "已处理", "version": original.json()["version"]},
    )  # fmt: skip
    assert cancel.status_code == 200, cancel.text
    (got,) = client.get(f"{V2}/requests/{joined['service_request_id']}.json").json()
    assert got["status"] == "closed"
    closed = client.get(f"{V2}/requests.json", params={"status": "closed"}).json()
    assert joined["service_request_id"] in {r["service_request_id"] for r in closed}


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_errors_are_the_specs_documents(on_demo: TestClient, demo_url: str, fmt: str):
    lon, lat = _place(demo_url)
    good = {**FORM, "lat": str(lat), "long": str(lon)}
    post = f"{V2}/requests.{fmt}"
    no_key = {k: v for k, v in good.items() if k != "api_key"}
    assert "api_key" in _errors(on_demo.post(post, data=no_key), 403)
    assert "api_key" in _errors(on_demo.post(post, data={**good, "api_key": "wrong"}), 403)
    cases = [
        ({"lat": None, "long": None}, "lat and long are required"),
        ({"lat": "NaN"}, "lat"), ({"long": "inf"}, "long"), ({"lat": "91"}, "lat"),
        ({"lat": "1e400"}, "lat"), ({"lat": "3l.2"}, "lat"),
        ({"service_code": "NOPE"}, "service_code 'NOPE' is not a service"),
        ({"service_code": None}, "service_code is required"),
        ({"description": "a\x00b"}, "NUL"),
        ({"media_url": "javascript:alert(1)"}, "media_url"),
        ({"colour": "red"}, "unknown form field 'colour'"),
        ({"description": "长" * 4001}, "description"),
    ]  # fmt: skip
    for change, words in cases:
        form = {k: v for k, v in {**good, **change}.items() if v is not None}
        assert words in _errors(on_demo.post(post, data=form), 400), change
    huge = on_demo.post(post, content=b"a=" + b"x" * 200_000,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert "larger than" in _errors(huge, 413)
    as_json = on_demo.post(post, json=good)
    assert "form" in _errors(as_json, 400)
    a_file = on_demo.post(post, data=good, files={"media": ("a.jpg", b"\xff\xd8", "image/jpeg")})
    assert "media_url" in _errors(a_file, 400)

    assert "no service request" in _errors(on_demo.get(f"{V2}/requests/{2**64}.{fmt}"), 404)
    assert "no service request" in _errors(on_demo.get(f"{V2}/requests/999999.{fmt}"), 404)
    lists = [
        ({"status": "pending"}, "open or closed"),
        ({"service_request_id": str(2**64)}, "not a request id"),
        ({"start_date": "yesterday"}, "W3C"),
        ({"start_date": "2024-01-01T00:00:00"}, "time zone"),
        ({"start_date": "2024-01-01", "end_date": "2024-06-01"}, "90 days"),
        ({"service_code": "NOPE"}, "service_code"),
        ({"page_size": "5"}, "unknown query parameter 'page_size'"),
        ({"status": "open\x00"}, "NUL"),
    ]
    for params, words in lists:
        assert words in _errors(on_demo.get(f"{V2}/requests.{fmt}", params=params), 400), params
    assert "api_key" in _errors(on_demo.get(f"{V2}/requests.{fmt}?api_key=wrong"), 403)
    assert "tracking token" in _errors(on_demo.get(f"{V2}/tokens/nope.{fmt}"), 404)
    # Nothing of the refused requests was stored.
    with psycopg.connect(demo_url) as conn:
        row = conn.execute("SELECT count(*) FROM incidents WHERE channel = 'external_system'"
                           " AND description LIKE '井盖不见了%%'").fetchone()  # fmt: skip
    assert row == (0,)


def test_other_formats_are_not_served_and_problem_json_stays_elsewhere(on_demo: TestClient):
    assert "json or .xml" in _errors(on_demo.get(f"{V2}/services.html"), 404)
    # The rest of the API keeps problem+json.
    elsewhere = on_demo.get("/incidents/1")
    assert elsewhere.headers["content-type"] == "application/problem+json"
    discovery = on_demo.get("/open311/discovery.json").json()
    assert discovery["endpoints"][0]["url"].endswith("/open311/v2")
