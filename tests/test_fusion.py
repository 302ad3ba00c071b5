"""Fusion at intake through the real app on a real data base: a second report of the same
problem, near in space and time or on the same asset, joins the open incident instead of
sending a second unit; one too far, too late, of another category or next to finished
work does not."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.helpers import make_data_dir, settings_for
from tests.test_intake import KEY, REPORTER, _report, _water_main
from tests.test_loop import _walk
from twin import db
from twin.incidents import categories, fusion, intake

# 公用设施 and 道路交通: no asset layers, the default fusion (50 m, 24 h).
PLAIN, OTHER = "BJ01", "BJ02"


@pytest.fixture
def staff(fresh_url: str) -> Iterator[TestClient]:
    settings = settings_for(make_data_dir("twin-fusion-"), api={"api_keys": {"test-key": "接线员"}})
    with TestClient(create_app(settings, database_url=fresh_url)) as client:
        yield client


def _east(lon: float, lat: float, metres: float) -> tuple[float, float]:
    """The point ``metres`` east (a spherical approximation: within a metre here)."""
    return lon + metres / (111_320 * math.cos(math.radians(lat))), lat


def _sent(response) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == 201, response.text
    return response.json()


def _fused(staff: TestClient, first: dict, second: dict) -> str:
    """Assert ``second`` joined ``first``: a duplicate of it, no unit, the join on both
    timelines; the note."""
    assert second["status"] == "duplicate" and second["duplicate_of"] == first["id"]
    assert second["unit"] is None and second["dispatch"]["how"] == "fused"
    assert [e["action"] for e in second["timeline"]] == ["reported", "fused"]
    note = second["timeline"][-1]["note"]
    assert note.startswith(f"fused: report {second['id']} joined incident {first['id']}")
    original = staff.get(f"/incidents/{first['id']}", headers=KEY).json()
    assert original["timeline"][-1]["action"] == "fused"
    assert original["timeline"][-1]["note"] == note
    assert original["status"] == first["status"] and original["unit"] == first["unit"]
    return note


def test_a_second_report_20_m_away_joins_the_first(staff: TestClient, fresh_url: str):
    lon, lat, _ = _water_main(fresh_url)
    first = _sent(_report(staff, PLAIN, lon, lat))
    second = _sent(_report(staff, PLAIN, *_east(lon, lat, 20)))
    note = _fused(staff, first, second)
    assert "same category within 50 m and 24 h" in note
    # Only one incident is open; the change log still counts the report.
    open_now = staff.get("/incidents", params={"category": PLAIN}, headers=KEY).json()
    assert sorted(i["status"] for i in open_now["incidents"]) == sorted(
        [first["status"], "duplicate"]
    )


def test_too_far_too_late_or_another_category_is_a_new_incident(staff: TestClient, fresh_url: str):
    lon, lat, _ = _water_main(fresh_url)
    day_before = (datetime.now(UTC) - timedelta(hours=30)).isoformat()
    old = _sent(_report(staff, OTHER, *_east(lon, lat, 300), reported_at=day_before))
    later = _sent(_report(staff, OTHER, *_east(lon, lat, 300)))  # 30 h on, the same spot
    assert later["status"] != "duplicate" and later["duplicate_of"] is None
    first = _sent(_report(staff, PLAIN, lon, lat))
    far = _sent(_report(staff, PLAIN, *_east(lon, lat, 80)))  # the default radius is 50 m
    other = _sent(_report(staff, OTHER, *_east(lon, lat, 20)))
    for incident in (far, other):
        assert incident["status"] != "duplicate" and incident["duplicate_of"] is None
        assert "fused" not in [e["action"] for e in incident["timeline"]]
    for incident in (old, first):
        again = staff.get(f"/incidents/{incident['id']}", headers=KEY).json()
        assert "fused" not in [e["action"] for e in again["timeline"]]


def _long_main(url: str) -> tuple[tuple[float, float], tuple[float, float], str]:
    """Two points 120 m apart along one long demo gas main (over 110 m apart as the crow
    flies), and the main's source id."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT ST_X(a), ST_Y(a), ST_X(b), ST_Y(b), source_id FROM (SELECT"
            " ST_LineInterpolatePoint(geom, 0.5 - 60 / len) AS a,"
            " ST_LineInterpolatePoint(geom, 0.5 + 60 / len) AS b, source_id, id FROM (SELECT"
            " geom, ST_Length(geom::geography) AS len, source_id, id FROM pipes WHERE network"
            " = 'gas' AND owner_unit = 'U-310199-GAS' AND ST_Length(geom::geography) > 300) p) x"
            " WHERE ST_Distance(a::geography, b::geography) > 110 ORDER BY id LIMIT 1"
        ).fetchone()
    assert row is not None, "the demo has a gas main over 300 m long"
    return (float(row[0]), float(row[1])), (float(row[2]), float(row[3])), str(row[4])


def test_a_report_on_the_same_pipe_120_m_away_joins(staff: TestClient, fresh_url: str):
    one_end, other_end, main = _long_main(fresh_url)
    first = _sent(_report(staff, "SJ0401", *one_end))
    assert first["assets"][0]["source_id"] == main
    second = _sent(_report(staff, "SJ0401", *other_end))
    assert second["assets"][0]["source_id"] == main
    with psycopg.connect(fresh_url) as conn:
        apart = conn.execute(
            "SELECT ST_Distance(ST_MakePoint(%s, %s)::geography, ST_MakePoint(%s, %s)::geography)",
            (*one_end, *other_end),
        ).fetchone()
    assert apart is not None and apart[0] > 110  # beyond 管道爆裂's 100 m
    note = _fused(staff, first, second)
    assert "same asset pipes-" in note and main in note


def test_a_report_next_to_a_closed_incident_is_a_new_one(staff: TestClient, fresh_url: str):
    lon, lat, _ = _water_main(fresh_url)
    first = _sent(_report(staff, "SJ0401", lon, lat))
    _walk(staff, first, "accept", "start", "resolve", "close")
    second = _sent(_report(staff, "SJ0401", lon, lat))
    assert second["status"] == "dispatched" and second["duplicate_of"] is None
    assert second["unit"]["code"] == "U-310199-WATERCO"


def test_tracking_a_fused_report_shows_the_incident_it_joined_and_no_personal_data(
    staff: TestClient, fresh_url: str
):
    lon, lat, _ = _water_main(fresh_url)
    first = _sent(_report(staff, "SJ0401", lon, lat, reporter={"name": "李四", "phone": "13800000000"},
                          description="第一位市民"))  # fmt: skip
    key = {"Idempotency-Key": "call-2"}
    second = _sent(_report(staff, "SJ0401", lon, lat, reporter=REPORTER, description="我家门口",
                           headers=key))  # fmt: skip
    assert second["tracking_token"] and second["tracking_token"] != first["tracking_token"]
    tracked = staff.get(f"/track/{second['tracking_token']}")  # no key: public
    assert tracked.status_code == 200
    shown = tracked.json()
    assert shown["status"] == "duplicate"
    assert shown["joined"]["incident"] == first["id"]
    assert shown["joined"]["status"] == "dispatched"
    assert shown["joined"]["unit"] == {"name": "演示区自来水公司"}
    assert [s["action"] for s in shown["timeline"]] == ["reported", "fused"]
    for private in ("王小明", "13912345678", "xm@example.cn", "我家门口", "接线员", "李四",
                    "13800000000", "第一位市民", first["tracking_token"]):  # fmt: skip
        assert private not in tracked.text
    # The original's own tracking follows its work, and has joined nothing.
    assert staff.get(f"/track/{first['tracking_token']}").json()["joined"] is None
    # A retry of the fused report answers it again, not a third incident.
    retry = _report(staff, "SJ0401", lon, lat, reporter=REPORTER, description="我家门口",
                    headers=key)  # fmt: skip
    assert retry.status_code == 200 and retry.json()["id"] == second["id"]
    original = staff.get(f"/incidents/{first['id']}", headers=KEY).json()
    assert [e["action"] for e in original["timeline"]].count("fused") == 1


def _at_once(url: str, first: dict, second: dict) -> tuple[intake.Incident, intake.Incident, bool]:
    """Report ``first`` and, while its transaction is still open, ``second`` on another
    connection; whether the second was still waiting when the first was let go."""
    with db.connect(url, autocommit=True) as one, db.connect(url, autocommit=True) as two:
        with one.transaction():  # the first intake's turn is held until this commit
            taken = intake.report(one, channel="hotline_12345", **first)
            result: dict[str, Any] = {}

            def report_second() -> None:
                try:
                    result["second"] = intake.report(two, channel="grid_inspector", **second)
                except Exception as exc:  # shown by the test
                    result["error"] = exc

            worker = threading.Thread(target=report_second)
            worker.start()
            worker.join(1.0)
            waited = worker.is_alive()
        worker.join(60)
    assert "error" not in result, result["error"]
    return taken, result["second"], waited


def test_two_reports_at_once_across_a_cell_border_still_fuse(fresh_url: str):
    # 20 m apart, on either side of a border of the grid the intakes take turns by.
    border = round(121.4001 / fusion.CELL_DEG) * fusion.CELL_DEG
    west, east = _east(border, 31.2401, -10), _east(border, 31.2401, 10)
    assert math.floor(west[0] / fusion.CELL_DEG) != math.floor(east[0] / fusion.CELL_DEG)
    first, second, waited = _at_once(
        fresh_url, {"category_code": PLAIN, "lon": west[0], "lat": west[1]},
        {"category_code": PLAIN, "lon": east[0], "lat": east[1]},
    )  # fmt: skip
    assert waited  # the second waited for the first, then saw it
    assert second.view["status"] == "duplicate" and second.view["duplicate_of"] == first.id
    assert first.view["status"] != "duplicate"


def test_two_reports_at_once_on_one_long_pipe_still_fuse(fresh_url: str):
    one_end, other_end, main = _long_main(fresh_url)
    first, second, _ = _at_once(
        fresh_url, {"category_code": "SJ0401", "lon": one_end[0], "lat": one_end[1]},
        {"category_code": "SJ0401", "lon": other_end[0], "lat": other_end[1]},
    )  # fmt: skip
    assert second.view["duplicate_of"] == first.id
    assert main in second.view["dispatch"]["reason"]


def test_a_report_elsewhere_of_the_same_category_does_not_wait_for_a_fusion_check(
    fresh_url: str,
):
    # 3 km apart: no fusion possible, so no turn to wait for (the whole category once did).
    lon, lat = 121.4001, 31.2401
    far = _east(lon, lat, 3000)
    with (
        db.connect(fresh_url, autocommit=True) as one,
        db.connect(fresh_url, autocommit=True) as two,
    ):
        with one.transaction():  # an intake here between its fusion check and its commit
            plain = categories.get_category(one, PLAIN)
            assert fusion.find_original(one, plain, (lon, lat), datetime.now(UTC), []) is None
            result: dict[str, Any] = {}
            worker = threading.Thread(target=lambda: result.update(second=intake.report(
                two, category_code=PLAIN, channel="camera_ai", lon=far[0], lat=far[1])))  # fmt: skip
            worker.start()
            worker.join(30)
            done = not worker.is_alive()
        worker.join(60)
    assert done, "the report 3 km away waited for the fusion check here"
    assert result["second"].view["duplicate_of"] is None
