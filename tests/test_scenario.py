"""The scenario of issue 11, end to end: a city brings its own jurisdictions (one district
has no streets), units, water mains with their owner, categories and a responsibility list,
all from files with the real ``twin`` command; then reports from every channel, each under
a key of its role, are attached and dispatched (a rule, the owner's rule over a deeper
one, the deepest rule, escalation, outside), fused, walked through every state with
send-back and reopen, supervised when overdue by the server's own sweep, tracked by the
resident, and counted in the evaluation."""

from __future__ import annotations

import csv
import io
import json
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from psycopg import sql
from shapely.geometry import LineString, box, mapping
from sqlalchemy.engine import make_url

from api.app import create_app
from tests.helpers import make_data_dir, run_twin, settings_for
from tests.test_photos import _gps_jpeg
from twin import db

ADMIN = {"X-API-Key": "scenario-admin"}
REPORTER = {"name": "李四", "phone": "13800001111", "email": "lisi@example.cn"}
PERSONAL = ("李四", "13800001111", "lisi@example.cn")

# 河湾市: two districts; 东区 (E) has streets and grids, 西区 (W) grids straight under the
# district (no street level).
JURISDICTIONS = [
    ("HW", "河湾市", "city", None, box(120.00, 30.00, 120.04, 30.02)),
    ("HW-E", "东区", "district", "HW", box(120.00, 30.00, 120.02, 30.02)),
    ("HW-W", "西区", "district", "HW", box(120.02, 30.00, 120.04, 30.02)),
    ("HW-E-1", "滨江街道", "street", "HW-E", box(120.00, 30.00, 120.01, 30.02)),
    ("HW-E-2", "花园街道", "street", "HW-E", box(120.01, 30.00, 120.02, 30.02)),
    ("HW-E-1-a", "滨江一格", "grid", "HW-E-1", box(120.00, 30.00, 120.01, 30.01)),
    ("HW-E-1-b", "滨江二格", "grid", "HW-E-1", box(120.00, 30.01, 120.01, 30.02)),
    ("HW-E-2-a", "花园一格", "grid", "HW-E-2", box(120.01, 30.00, 120.02, 30.01)),
    ("HW-E-2-b", "花园二格", "grid", "HW-E-2", box(120.01, 30.01, 120.02, 30.02)),
    ("HW-W-a", "西区一格", "grid", "HW-W", box(120.02, 30.00, 120.04, 30.01)),
    ("HW-W-b", "西区二格", "grid", "HW-W", box(120.02, 30.01, 120.04, 30.02)),
]
UNITS = [
    ("CITY-C", "河湾市城运中心", "centre", "HW"),
    ("E-C", "东区城运中心", "centre", "HW-E"),
    ("WATERCO", "河湾水务集团", "company", "HW"),
    ("E-ROADS", "东区市政所", "department", "HW-E"),
    ("E2-CLEAN", "花园街道环卫所", "team", "HW-E-2"),
    ("W-ORDER", "西区城管中队", "team", "HW-W"),
]
CATEGORIES = [
    # code, name, parent, asset layers, radius, response h, resolve h, priority, fusion m, h
    ("A", "市容环境", "", "", 50, 4, 48, 3, "", ""),
    ("A01", "垃圾满溢", "A", "", 50, 2, 12, 2, "", ""),
    ("B", "供水", "", "", 50, 2, 24, 2, "", ""),
    ("B01", "管道爆裂", "B", "pipes", 60, 1, 12, 1, 100, 6),
    ("C", "街面秩序", "", "", 50, 4, 24, 3, "", ""),
    ("C01", "占道经营", "C", "", 50, 2, 8, 3, "", ""),
    ("S", "安全", "", "", 50, 1, 4, 1, "", ""),
    ("S01", "燃气泄漏", "S", "", 50, 0.5, 4, 1, "", ""),
]
RULES = [
    # category, jurisdiction, asset owner, unit
    ("A", "HW-E", "", "E-ROADS"),  # 市容 anywhere in the east: the district's works office
    ("A01", "HW-E-2", "", "E2-CLEAN"),  # but rubbish in 花园街道: its own sanitation team
    ("B01", "HW-E", "", "E-ROADS"),  # a burst in the east: the works office …
    ("B01", "HW", "WATERCO", "WATERCO"),  # … unless it is on the water company's main
    ("C01", "HW-W", "", "W-ORDER"),
]
# A water main of the water company across the east (along lat 30.005).
MAIN = LineString([(120.001, 30.005), (120.019, 30.005)])


def _write_geojson(path: Path, features: list[tuple[dict, object]]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": p, "geometry": mapping(g) if g is not None else None}
        for p, g in features
    ]}, ensure_ascii=False), encoding="utf-8")  # fmt: skip
    return path


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def city_url(template_url: str) -> Iterator[str]:
    """An empty data base of its own, migrated: the city brings everything in files."""
    name = f"scenario_{os.getpid()}"
    admin = psycopg.conninfo.make_conninfo(template_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    url = make_url(template_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION postgis")
    db.migrate(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _import_the_city(url: str, folder: Path) -> None:
    env = {"TWIN_DATABASE_URL": url}
    files = [
        ("jurisdictions", _write_geojson(folder / "辖区.geojson", [
            ({"code": c, "name": n, "level": lv, "parent_code": p}, g)
            for c, n, lv, p, g in JURISDICTIONS]), ()),
        ("units", _write_csv(folder / "单位.csv", ["code", "name", "kind", "jurisdiction_code"],
                             UNITS), ()),
        ("pipes", _write_geojson(folder / "供水管网.geojson", [
            ({"编号": "GS-001", "管径": "DN300", "权属单位": "WATERCO"}, MAIN)]),
         ("--set", "network=water")),
        ("categories", _write_csv(folder / "事件分类.csv", [
            "code", "name", "parent_code", "asset_layers", "attach_radius_m", "response_hours",
            "resolve_hours", "priority", "fusion_radius_m", "fusion_hours"], CATEGORIES), ()),
        ("responsibilities", _write_csv(folder / "责任清单.csv", [
            "category_code", "jurisdiction_code", "asset_owner", "unit_code"], RULES), ()),
    ]  # fmt: skip
    for layer, path, flags in files:
        done = run_twin("import", layer, str(path), *flags, env=env)
        assert done.returncode == 0, (layer, done.stdout, done.stderr)


def _keys(client: TestClient) -> dict[str, dict[str, str]]:
    made = {}
    for name, role, scope in (
        ("12345热线", "dispatcher", {}),
        ("滨江一格网格员", "grid_inspector", {"jurisdiction": "HW-E-1-a"}),
        ("市民随手拍", "resident", {}),
        ("物联感知平台", "external", {}),
        ("水务抢修班", "unit_staff", {"unit": "WATERCO"}),
        ("东区市政所", "unit_staff", {"unit": "E-ROADS"}),
        ("督办科", "supervisor", {}),
    ):
        answer = client.post("/keys", json={"name": name, "role": role, **scope}, headers=ADMIN)
        assert answer.status_code == 201, answer.text
        made[name] = {"X-API-Key": answer.json()["key"]}
    return made


def _report(client: TestClient, key: dict[str, str], category: str, lon: float, lat: float,
            channel: str | None = None, **more: object) -> dict:  # fmt: skip
    body = {"category": category, "location": {"lon": lon, "lat": lat}, **more}
    if channel is not None:
        body["channel"] = channel
    answer = client.post("/incidents", json=body, headers=key)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _act(client: TestClient, key: dict[str, str], incident_id: int, action: str,
         **body: object) -> dict:  # fmt: skip
    version = client.get(f"/incidents/{incident_id}", headers=ADMIN).json()["version"]
    answer = client.post(f"/incidents/{incident_id}/transitions",
                         json={"action": action, "version": version, **body}, headers=key)  # fmt: skip
    assert answer.status_code == 200, (action, answer.text)
    return answer.json()


def _staff(client: TestClient, incident_id: int) -> dict:
    return client.get(f"/incidents/{incident_id}", headers=ADMIN).json()


def test_a_city_from_files_takes_reports_from_every_channel_through_the_whole_loop(
    city_url: str, tmp_path: Path
):
    _import_the_city(city_url, tmp_path)
    settings = settings_for(make_data_dir("twin-scenario-"),
                            api={"api_keys": {"scenario-admin": "管理员"}, "sweep_interval_s": 0.3})  # fmt: skip
    with TestClient(create_app(settings, database_url=city_url)) as client:
        key = _keys(client)
        hotline, inspector = key["12345热线"], key["滨江一格网格员"]
        resident, platform = key["市民随手拍"], key["物联感知平台"]

        # -- attach and dispatch --------------------------------------------------------
        # On the water company's main in 滨江一格: the owner's rule beats the deeper
        # district rule for bursts.
        burst = _report(client, hotline, "B01", 120.008, 30.0051, "hotline_12345",
                        reporter=REPORTER, description="主干道水管爆裂，水漫路面")  # fmt: skip
        assert burst["unit"]["code"] == "WATERCO" and burst["dispatch"]["how"] == "owner"
        assert "WATERCO" in burst["dispatch"]["reason"] and "GS-001" in burst["dispatch"]["reason"]
        assert [j["code"] for j in burst["jurisdictions"]] == ["HW", "HW-E", "HW-E-1", "HW-E-1-a"]
        assert burst["assets"][0]["source_id"] == "GS-001" and burst["assets"][0]["distance_m"] < 20
        # Far from any main: the district's rule.
        dry = _report(client, inspector, "B01", 120.003, 30.008)  # in its grid, 330 m off the main
        assert dry["channel"] == "grid_inspector" and dry["unit"]["code"] == "E-ROADS"
        assert dry["dispatch"]["how"] == "rule" and not dry["assets"]
        # Rubbish in 花园街道: the most specific category and deepest jurisdiction.
        # … sent by a resident's app with a phone photo (随手拍) that knows where it was taken.
        report = {"category": "A01", "location": {"lon": 120.015, "lat": 30.015},
                  "reporter": REPORTER, "description": "垃圾桶满了没人清"}  # fmt: skip
        sent = client.post("/incidents", data={"report": json.dumps(report, ensure_ascii=False)},
                           files=[("photo", ("IMG_0001.jpg", _gps_jpeg(), "image/jpeg"))],
                           headers=resident)  # fmt: skip
        assert sent.status_code == 201, sent.text
        rubbish = sent.json()
        assert rubbish["channel"] == "resident_photo" and "reporter" not in rubbish
        [photo] = rubbish["photos"]
        shown = client.get(photo["url"])
        assert shown.status_code == 200 and b"GPS" not in shown.content
        assert not Image.open(io.BytesIO(shown.content)).getexif().get_ifd(0x8825)
        assert "original_url" not in photo
        rubbish = _staff(client, rubbish["id"])
        assert rubbish["unit"]["code"] == "E2-CLEAN"
        # Rubbish in 滨江街道: the category's parent rule for the whole district.
        rubbish_w = _report(client, hotline, "A01", 120.005, 30.012, "hotline_12345",
                            description="垃圾桶倒了，垃圾撒了一地")  # fmt: skip
        assert rubbish_w["unit"]["code"] == "E-ROADS"
        # A street stall in 西区 (no streets there): the district's grid level still works.
        stall = _report(client, platform, "C01", 120.030, 30.015, "camera_ai")
        stall = _staff(client, stall["id"])
        assert stall["unit"]["code"] == "W-ORDER"
        assert [j["level"] for j in stall["jurisdictions"]] == ["city", "district", "grid"]
        # Gas: no rule anywhere; in the east the district's centre, in the west (no centre)
        # the city's: 街道吹哨、部门报到.
        gas_e = _report(client, platform, "S01", 120.005, 30.003, "sensor_alarm")
        gas_e = _staff(client, gas_e["id"])
        assert gas_e["escalated"] and gas_e["unit"]["code"] == "E-C"
        assert gas_e["dispatch"]["how"] == "escalation"
        gas_w = _staff(
            client, _report(client, hotline, "S01", 120.035, 30.005, "hotline_12345")["id"]
        )
        assert gas_w["escalated"] and gas_w["unit"]["code"] == "CITY-C"
        # Outside the city: accepted, waits for a dispatcher.
        outside = _report(client, platform, "A01", 121.5, 31.2, "external_system")
        outside = _staff(client, outside["id"])
        assert outside["outside"] and outside["status"] == "reported" and outside["unit"] is None
        manual = client.post(f"/incidents/{outside['id']}/dispatch",
                             json={"unit": "CITY-C", "version": outside["version"],
                                   "note": "邻市交界，先由市中心协调"}, headers=hotline)  # fmt: skip
        assert manual.status_code == 200 and manual.json()["dispatch"]["how"] == "manual"

        # -- fusion ---------------------------------------------------------------------
        again = _report(client, resident, "B01", 120.0082, 30.0052, reporter=REPORTER)
        again_staff = _staff(client, again["id"])
        assert again_staff["status"] == "duplicate" and again_staff["duplicate_of"] == burst["id"]
        assert again["joined"]["incident"] == burst["id"]
        tracked = client.get(f"/track/{again['tracking_token']}")
        assert tracked.status_code == 200 and tracked.json()["joined"]["incident"] == burst["id"]

        # -- the loop: every state, send-back, reopen, the endings -----------------------
        water = key["水务抢修班"]
        _act(client, water, burst["id"], "accept")
        _act(client, water, burst["id"], "start")
        _act(client, water, burst["id"], "resolve", note="更换 DN300 管段 2 m")
        # The grid inspector checks on the spot: not fixed, reopened; then fixed, closed.
        reopened = _act(client, inspector, burst["id"], "reopen", note="现场仍在渗水")
        assert reopened["status"] == "in_progress" and reopened["reopens"] == 1
        _act(client, water, burst["id"], "resolve", note="补焊后不再渗水")
        closed = _act(client, inspector, burst["id"], "close", note="核查通过")
        assert closed["status"] == "closed"
        assert [e["to_status"] for e in closed["timeline"] if e["action"] != "fused"] == [
            "reported", "dispatched", "accepted", "in_progress", "resolved", "in_progress",
            "resolved", "closed"]  # fmt: skip
        # The works office sends the dry report back: the dispatcher gives it to the water
        # company, which the office's key then no longer sees.
        roads = key["东区市政所"]
        back = _act(client, roads, dry["id"], "send_back", note="是供水管网问题，不归市政")
        assert back["status"] == "reported" and back["unit"] is None
        _act(client, hotline, dry["id"], "dispatch", unit="WATERCO", note="转水务集团")
        assert client.get(f"/incidents/{dry['id']}", headers=roads).status_code == 404
        assert client.get(f"/incidents/{dry['id']}", headers=water).status_code == 200
        reassigned = _act(client, hotline, rubbish_w["id"], "reassign", unit="E2-CLEAN",
                          note="实为花园街道辖区")  # fmt: skip
        assert reassigned["unit"]["code"] == "E2-CLEAN"
        supervisor = key["督办科"]
        assert (
            _act(client, supervisor, gas_w["id"], "cancel", note="误报：传感器故障")["status"]
            == "cancelled"
        )
        assert (
            _act(client, hotline, stall["id"], "not_our_duty", note="私人场地内纠纷")["status"]
            == "not_our_duty"
        )
        manual_dup = _act(client, hotline, rubbish_w["id"], "duplicate", duplicate_of=rubbish["id"])
        assert manual_dup["status"] == "duplicate" and manual_dup["duplicate_of"] == rubbish["id"]
        refused = client.post(f"/incidents/{burst['id']}/transitions",
                              json={"action": "accept", "version": closed["version"]}, headers=water)  # fmt: skip
        assert refused.status_code == 409 and "closed" in refused.json()["detail"]

        # -- overdue: the server's own sweep supervises and escalates ---------------------
        long_ago = (datetime.now(UTC) - timedelta(days=2)).isoformat()
        late = _report(client, hotline, "A01", 120.016, 30.004, "hotline_12345",
                       reported_at=long_ago, description="小区门口垃圾桶发臭")  # fmt: skip
        assert late["unit"]["code"] == "E2-CLEAN"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            late_now = _staff(client, late["id"])
            if any(e["action"] == "supervised" for e in late_now["timeline"]):
                break
            time.sleep(0.2)
        supervised = [e for e in late_now["timeline"] if e["action"] == "supervised"]
        assert len(supervised) == 1 and "督办" in supervised[0]["note"]
        assert "东区城运中心" in supervised[0]["note"] and late_now["escalated"]
        overdue = client.get("/incidents", params={"overdue": "true"}, headers=hotline).json()
        assert late["id"] in {i["id"] for i in overdue["incidents"]}

        # -- tracking: the resident sees progress, nobody's personal data -----------------
        mine = client.get(f"/track/{burst['tracking_token']}")
        assert mine.status_code == 200 and mine.json()["status"] == "closed"
        assert not any(p in mine.text for p in PERSONAL)
        for path in ("/collections/incidents/items?limit=100", "/track/" + again["tracking_token"]):
            shown = client.get(path)
            assert shown.status_code == 200 and not any(p in shown.text for p in PERSONAL), path
        assert client.get("/track/no-such-token").status_code == 404

        # -- evaluation (一网评效) and public sentiment ------------------------------------
        assert client.get("/evaluation/units", headers=water).status_code == 403
        figures = client.get("/evaluation/units", headers=supervisor)
        assert figures.status_code == 200, figures.text
        by_unit = {u["unit"]: u for u in figures.json()["units"]}
        waterco = by_unit["WATERCO"]
        assert (waterco["received"], waterco["auto_by_owner"], waterco["dispatched_manual"]) == (
            2,
            1,
            1,
        )
        assert waterco["reopened"] == 1 and waterco["on_time_rate"] == 1.0 and waterco["rank"] == 1
        # Both of the works office's automatic dispatches were moved: none judged right.
        roads_figures = by_unit["E-ROADS"]
        assert roads_figures["dispatched_auto"] == 2 and roads_figures["reassigned"] == 2
        assert roads_figures["dispatch_accuracy"] == 0.0
        assert by_unit["E2-CLEAN"]["supervised"] == 1 and by_unit["E2-CLEAN"]["overdue_now"] == 1
        assert by_unit["E-C"]["auto_by_escalation"] == 1
        exported = client.get("/evaluation/units", params={"format": "csv"}, headers=supervisor)
        assert exported.status_code == 200 and exported.content.startswith(b"\xef\xbb\xbf")
        rows = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
        assert {r["unit"]: int(r["received"]) for r in rows} == {
            u: f["received"] for u, f in by_unit.items()}  # fmt: skip
        # A dispatcher held to 西区 evaluates 西区's work only.
        west = client.post("/keys", json={"name": "西区调度", "role": "dispatcher",
                                          "jurisdiction": "HW-W"}, headers=ADMIN)  # fmt: skip
        west_figures = client.get("/evaluation/units",
                                  headers={"X-API-Key": west.json()["key"]}).json()  # fmt: skip
        assert {u["unit"] for u in west_figures["units"]} == {"W-ORDER", "CITY-C"}
        west_words = client.get("/sentiment/words", params={"min_reports": 2},
                                headers={"X-API-Key": west.json()["key"]}).json()  # fmt: skip
        assert "垃圾桶" not in {w["word"] for w in west_words["words"]}  # the east's words
        west_trend = client.get("/sentiment/categories",
                                headers={"X-API-Key": west.json()["key"]}).json()  # fmt: skip
        assert {c["code"] for c in west_trend["categories"]} == {"C01", "S01"}
        districts = client.get("/evaluation/jurisdictions", params={"level": "district"},
                               headers=supervisor).json()  # fmt: skip
        assert {j["code"] for j in districts["jurisdictions"]} == {"HW-E", "HW-W"}
        words = client.get("/sentiment/words", headers=supervisor)
        assert words.status_code == 200
        hot = {w["word"]: w["count"] for w in words.json()["words"]}
        assert hot.get("垃圾桶") == 3, hot
        assert not any(p in words.text for p in PERSONAL)

        # -- an external system through Open311, in XML and JSON -------------------------
        form = {"api_key": platform["X-API-Key"], "service_code": "C01", "lat": "30.012",
                "long": "120.031", "description": "<b>占道</b>摆摊", "first_name": "李",
                "last_name": "四", "phone": REPORTER["phone"]}  # fmt: skip
        posted = client.post("/open311/v2/requests.xml", data=form)
        assert posted.status_code == 201, posted.text
        sent = ET.fromstring(posted.content).find("request")
        assert sent is not None
        request_id, token = sent.findtext("service_request_id"), sent.findtext("token")
        assert request_id and token
        via_311 = _staff(client, int(request_id))
        assert via_311["channel"] == "external_system" and via_311["unit"]["code"] == "W-ORDER"
        read = client.get(f"/open311/v2/requests/{request_id}.json")
        assert read.status_code == 200 and REPORTER["phone"] not in read.text
        assert read.json()[0]["agency_responsible"] == "西区城管中队"
        assert read.json()[0]["status"] == "open"
        by_token = client.get(f"/open311/v2/tokens/{token}.xml")
        assert ET.fromstring(by_token.content).findtext("request/service_request_id") == request_id
