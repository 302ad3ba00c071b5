"""Evaluation (一网评效) and public sentiment (社情民意) through the real app, on a small
history made with the core (intake.report in the past, loop.transition, the SLA sweep)
whose event times are set in the past, so every figure is known exactly: received,
automatic and manual dispatch, accuracy after a reassignment, on-time rates, medians,
reopen rate, the ranking with a tie; category trends against the period before, hot
words, hotspots, an emerging cluster; the CSV export, and bad input."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.conftest import _clone, _drop
from tests.helpers import make_data_dir, settings_for
from twin.incidents import categories, intake, loop, responsibilities

KEY = {"X-API-Key": "test-key"}
S1, S2, S3, S4 = "310199001000", "310199002000", "310199003000", "310199004000"
X, Y, Z = "U-310199001-CMTEAM", "U-310199001-HOUSING", "U-310199002-CMTEAM"
CENTRE_S2 = "U-310199002-CENTRE"
WATERCO, ROADS = "U-310199-WATERCO", "U-310199-ROADS"
NOW = datetime.now(UTC).replace(microsecond=0)
# 10:00 in the city (UTC+8) ten days ago: the day buckets are the city's, so a history set
# at "now" minus hours would cross a midnight for an hour of each day (the test ran at 23:20).
T0 = (
    (NOW - timedelta(days=10))
    .astimezone(timezone(timedelta(hours=8)))
    .replace(hour=10, minute=0, second=0)
    .astimezone(UTC)
)
H = timedelta(hours=1)
D = timedelta(days=1)
MANHOLE = "井盖缺失，路人险些掉入，联系电话13800138000"


def _category(conn: psycopg.Connection, code: str, name: str, response: float,
              resolve: float, fusion_m: float = 50.0) -> None:  # fmt: skip
    categories.put(conn, code, {"name": name, "attach_radius_m": 10, "response_hours": response,
                                "resolve_hours": resolve, "fusion_radius_m": fusion_m,
                                "fusion_hours": 24})  # fmt: skip


def _grid_points(conn: psycopg.Connection, street: str) -> list[tuple[float, float]]:
    rows = conn.execute(
        "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p, code FROM"
        " jurisdictions WHERE level = 'grid' AND parent_code = %s) g ORDER BY code",
        (street,),
    ).fetchall()
    return [(float(x), float(y)) for x, y in rows]


def _water_main(conn: psycopg.Connection, street: str) -> tuple[float, float]:
    row = conn.execute(
        "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_LineInterpolatePoint(f.geom, 0.5) AS p, f.id"
        " FROM pipes f WHERE f.network = 'water' AND f.owner_unit = %s) m JOIN jurisdictions j"
        " ON j.code = %s AND ST_Contains(j.geom, m.p) ORDER BY m.id LIMIT 1",
        (WATERCO, street),
    ).fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


class History:
    """The known history: which incident is which, and the connection that made it."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.ids: dict[str, int] = {}

    def report(self, name: str, category: str, point: tuple[float, float], at: datetime,
               description: str = "") -> dict[str, Any]:  # fmt: skip
        made = intake.report(
            self.conn, category_code=category, channel="hotline_12345", lon=point[0],
            lat=point[1], description=description, reported_at=at,
            reporter={"name": "王小明", "phone": "13912345678"},
        )  # fmt: skip
        self.ids[name] = made.id
        return made.view

    def walk(self, name: str, *steps: tuple[str, datetime] | tuple[str, datetime, dict]) -> None:
        """Take each step now, then set its event's time to the one given."""
        incident_id = self.ids[name]
        for step in steps:
            action, at = step[0], step[1]
            extra = step[2] if len(step) > 2 else {}  # type: ignore[misc]
            version = intake.get(self.conn, incident_id)["version"]
            loop.transition(self.conn, incident_id, action, actor="调度员",
                            note=extra.pop("note", "因为"), expected_version=version, **extra)  # fmt: skip
            self.conn.execute(
                "UPDATE incident_events SET at = %s WHERE id = (SELECT max(id) FROM"
                " incident_events WHERE incident_id = %s)",
                (at, incident_id),
            )


@pytest.fixture(scope="module")
def made(template_url: str) -> Iterator[tuple[str, History]]:
    """A private data base with the history (made once: the tests only read it)."""
    name = f"evaluation_{os.getpid()}"
    url = _clone(template_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        history = _make_history(conn)
        yield url, history
    _drop(template_url, name)


def _make_history(conn: psycopg.Connection) -> History:
    # Categories of our own, with rules to units we choose: every figure is ours to know.
    _category(conn, "EV-A", "井盖缺失（测试）", 2, 12)
    _category(conn, "EV-B", "楼道堆物（测试）", 4, 24)
    _category(conn, "EV-N", "无人管（测试）", 1, 2)  # no rule: escalated to a centre
    _category(conn, "EV-C", "=SUM(1+1)占道", 100, 1000, fusion_m=1)  # for the cluster
    for category, place, unit in (("EV-A", S1, X), ("EV-B", S1, Y), ("EV-C", S3, X)):
        responsibilities.add_rule(conn, {"category_code": category, "jurisdiction_code": place,
                                         "unit_code": unit})  # fmt: skip
    s1, s2, s3 = (_grid_points(conn, s) for s in (S1, S2, S3))
    h = History(conn)
    # Before the period: two reports of EV-A, cancelled.
    for k in range(2):
        h.report(f"old{k}", "EV-A", s1[2 + k], NOW - timedelta(days=40 + k),
                 "井盖松动" if k == 0 else "路灯不亮")  # fmt: skip
        h.walk(f"old{k}", ("cancel", NOW - timedelta(days=39)))
    # Unit X (EV-A: respond in 2 h, resolve in 12 h).
    x1 = h.report("x1", "EV-A", s1[0], T0, MANHOLE)
    assert x1["unit"]["code"] == X and x1["dispatch"]["how"] == "rule"
    dup = h.report("dup", "EV-A", s1[0], T0 + H, MANHOLE)  # the same problem: fused
    assert dup["duplicate_of"] == h.ids["x1"]
    h.walk("x1", ("accept", T0 + H), ("start", T0 + H), ("resolve", T0 + 5 * H),
           ("close", T0 + 6 * H))  # fmt: skip
    t = T0 + 2 * D
    h.report("x2", "EV-A", s1[0], t, MANHOLE)  # late on both clocks
    h.walk("x2", ("accept", t + 3 * H), ("start", t + 3 * H), ("resolve", t + 20 * H),
           ("close", t + 22 * H))  # fmt: skip
    t = T0 + 4 * D
    h.report("x3", "EV-A", s1[0], t, MANHOLE + "，张三丰反映")  # accepted just in time
    h.walk("x3", ("accept", t + 2 * H), ("start", t + 2 * H), ("resolve", t + 10 * H),
           ("reopen", t + 12 * H), ("resolve", t + 20 * H), ("close", t + 30 * H))  # fmt: skip
    t = T0 + 6 * D
    h.report("x4", "EV-A", s1[1], t, "窨井冒水")  # accepted, never resolved: overdue now
    h.walk("x4", ("accept", t + H), ("start", t + H))
    # Unit Y (EV-B: 4 h, 24 h), and a dispatch it should not have had, reassigned to Z.
    t = T0 + D
    h.report("y1", "EV-B", s1[3], t, "楼道堆物堵塞消防通道")
    h.walk("y1", ("accept", t + H / 2), ("start", t + H), ("resolve", t + 2 * H),
           ("close", t + 3 * H))  # fmt: skip
    t = T0 + 3 * D
    h.report("y2", "EV-B", s1[4], t, "楼道堆物")
    h.walk("y2", ("reassign", t + H / 2, {"unit": Z}), ("accept", t + H), ("start", t + H),
           ("resolve", t + 5 * H), ("close", t + 6 * H))  # fmt: skip
    # The water company's main (the owner's rule), handed to the roads office, cancelled.
    t = T0 + D
    w = h.report("w1", "SJ0401", _water_main(conn, S4), t, "路面冒水")
    assert w["unit"]["code"] == WATERCO and w["dispatch"]["how"] == "owner"
    h.walk("w1", ("reassign", t + H, {"unit": ROADS}), ("cancel", t + 2 * H))
    # No rule: escalated to the street's centre, never accepted.
    e1 = h.report("e1", "EV-N", s2[0], T0 + 5 * D, "无人管的事")
    assert e1["unit"]["code"] == CENTRE_S2 and e1["dispatch"]["how"] == "escalation"
    supervised = loop.sweep(conn)
    assert sorted(s["id"] for s in supervised) == sorted([h.ids["x4"], h.ids["e1"]])
    # An emerging cluster: six reports some 22 m apart in a row of 100 m, two days ago, in
    # street S3.
    lon, lat = s3[0]
    for k in range(6):
        h.report(f"c{k}", "EV-C", (lon + 0.0002 * k, lat + 0.0001 * (k % 2)),
                 NOW - 2 * D + k * H, "占道经营摆摊")  # fmt: skip
    return h


@pytest.fixture(scope="module")
def staff(made: tuple[str, History]) -> Iterator[TestClient]:
    settings = settings_for(make_data_dir("twin-eval-"), api={"api_keys": {"test-key": "考核员"}})
    with TestClient(create_app(settings, database_url=made[0])) as client:
        yield client


# The evaluation's period: the week of the history, not the cluster two days ago.
PERIOD = {"from": (T0 - H).isoformat(), "to": (T0 + 7 * D).isoformat()}


def _by(rows: list[dict], key: str) -> dict[str, dict]:
    return {r[key]: r for r in rows}


def test_units_figures_and_ranking(staff: TestClient):
    answer = staff.get("/evaluation/units", params=PERIOD, headers=KEY)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "on_time_rate" in body["ranking"]
    units = _by(body["units"], "unit")
    assert set(units) == {X, Y, Z, CENTRE_S2, WATERCO, ROADS}
    x = units[X]
    # Four work orders (the fused duplicate is none, the reports before the period out).
    assert x["received"] == 4 and x["dispatched_auto"] == 4 and x["auto_by_rule"] == 4
    assert x["reassigned"] == 0 and x["dispatch_accuracy"] == 1.0
    # x1 and x3 resolved in time, x2 late, x4 open past its time.
    assert (x["resolve_due"], x["resolved_on_time"], x["on_time_rate"]) == (4, 2, 0.5)
    # Accepted in 1, 3, 2 (just in time) and 1 hours.
    assert (x["response_due"], x["responded_on_time"], x["response_on_time_rate"]) == (4, 3, 0.75)
    assert x["median_accept_hours"] == 1.5
    assert x["median_close_hours"] == 22.0  # closed after 6, 22 and 30 hours
    assert (x["resolved"], x["reopened"], x["reopen_rate"]) == (3, 1, 0.3333)
    assert x["overdue_now"] == 1 and x["supervised"] == 1
    # Y was sent two automatically, one of them wrongly (reassigned to Z).
    y = units[Y]
    assert (y["received"], y["dispatched_auto"], y["reassigned"]) == (1, 2, 1)
    assert y["dispatch_accuracy"] == 0.5
    assert (y["on_time_rate"], y["response_on_time_rate"], y["reopen_rate"]) == (1.0, 1.0, 0.0)
    assert (y["median_accept_hours"], y["median_close_hours"]) == (0.5, 3.0)
    z = units[Z]
    assert (z["received"], z["dispatched_auto"], z["dispatched_manual"]) == (1, 0, 1)
    assert z["dispatch_accuracy"] is None and z["on_time_rate"] == 1.0
    assert z["median_close_hours"] == 6.0  # from the report, not from the reassignment
    centre = units[CENTRE_S2]
    assert centre["auto_by_escalation"] == 1 and centre["on_time_rate"] == 0.0
    assert centre["median_accept_hours"] is None and centre["overdue_now"] == 1
    # The owner's rule sent the burst main to the water company, wrongly.
    water = units[WATERCO]
    assert (water["received"], water["dispatched_auto"], water["auto_by_owner"]) == (0, 1, 1)
    assert water["reassigned"] == 1 and water["dispatch_accuracy"] == 0.0
    roads = units[ROADS]
    assert (roads["received"], roads["dispatched_manual"], roads["resolve_due"]) == (1, 1, 0)
    # Y and Z tie (every rate equal): both first, X third, the centre fourth; nothing was
    # due of the roads office's (cancelled) or the water company's (none now): no rank.
    assert [(u["unit"], u["rank"]) for u in body["units"]] == [
        (Y, 1), (Z, 1), (X, 3), (CENTRE_S2, 4), (ROADS, None), (WATERCO, None)
    ]  # fmt: skip


def test_jurisdictions_per_street_and_within_a_district(staff: TestClient):
    answer = staff.get("/evaluation/jurisdictions", params={**PERIOD, "level": "street"},
                       headers=KEY)  # fmt: skip
    assert answer.status_code == 200, answer.text
    streets = _by(answer.json()["jurisdictions"], "code")
    assert set(streets) == {S1, S2, S4}
    s1 = streets[S1]
    assert s1["name"] == "棠浦路街道" and s1["level"] == "street"
    # x1-x4, y1, y2: six work orders, all dispatched by rule, one reassigned.
    assert (s1["received"], s1["dispatched_auto"], s1["reassigned"]) == (6, 6, 1)
    assert s1["dispatch_accuracy"] == 0.8333 and s1["dispatched_manual"] == 1
    assert (s1["resolve_due"], s1["resolved_on_time"], s1["on_time_rate"]) == (6, 4, 0.6667)
    assert s1["median_accept_hours"] == 1.0  # 1, 3, 2, 1, 0.5, 1
    assert s1["supervised"] == 1 and s1["rank"] == 1
    assert streets[S2]["auto_by_escalation"] == 1 and streets[S2]["rank"] == 2
    s4 = streets[S4]  # the burst main: by the owner's rule, reassigned, cancelled
    assert (s4["auto_by_owner"], s4["reassigned"], s4["dispatch_accuracy"]) == (1, 1, 0.0)
    assert s4["rank"] is None
    grids = staff.get("/evaluation/jurisdictions",
                      params={**PERIOD, "level": "grid", "within": S2}, headers=KEY).json()  # fmt: skip
    assert [g["received"] for g in grids["jurisdictions"]] == [1]


def _csv(response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith("attachment; filename*=UTF-8''")
    assert response.content.startswith("\ufeff".encode())  # Excel then reads UTF-8
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


def _as_cells(values: list[Any]) -> list[str]:
    return ["" if v is None else str(v) for v in values]


def test_the_csv_export_is_the_json_answer(staff: TestClient):
    from twin.incidents.evaluation import UNIT_COLUMNS

    json_units = staff.get("/evaluation/units", params=PERIOD, headers=KEY).json()["units"]
    table = _csv(staff.get("/evaluation/units", params={**PERIOD, "format": "csv"}, headers=KEY))
    assert table[0] == list(UNIT_COLUMNS)
    assert table[1:] == [_as_cells([u[c] for c in UNIT_COLUMNS]) for u in json_units]
    # Asked for by Accept too.
    by_accept = staff.get("/evaluation/units", params=PERIOD,
                          headers={**KEY, "Accept": "text/csv"})  # fmt: skip
    assert _csv(by_accept) == table
    # A name that reads as a formula is written as text.
    trends = _csv(staff.get("/sentiment/categories", params={"format": "csv"}, headers=KEY))
    names = [row[1] for row in trends[1:]]
    assert "'=SUM(1+1)占道" in names and "=SUM(1+1)占道" not in names


def test_category_trends_against_the_period_before(staff: TestClient):
    answer = staff.get("/sentiment/categories", headers=KEY)  # the last 30 days, by day
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["interval"] == "day" and len(body["buckets"]) in (30, 31)
    found = _by(body["categories"], "code")
    # Every report counts here, the fused duplicate too: x1-x4 and it, against two before.
    a = found["EV-A"]
    assert (a["count"], a["previous"], a["change"], a["change_pct"]) == (5, 2, 3, 150.0)
    assert sum(a["series"]) == 5 and max(a["series"]) == 2  # x1 and its duplicate, one day
    assert found["EV-C"]["count"] == 6 and found["EV-C"]["change_pct"] is None
    assert body["count"] == 5 + 2 + 1 + 1 + 6 and body["previous"] == 2  # A, B, N, burst, C
    assert body["categories"][0]["code"] == "EV-C"  # the most reported first
    weekly = staff.get("/sentiment/categories", params={"interval": "week"}, headers=KEY).json()
    assert sum(_by(weekly["categories"], "code")["EV-A"]["series"]) == 5
    assert all(datetime.fromisoformat(b).weekday() == 0 for b in weekly["buckets"])


def test_hot_words_from_the_descriptions_without_personal_data(staff: TestClient):
    answer = staff.get("/sentiment/words", headers=KEY)
    assert answer.status_code == 200, answer.text
    words = _by(answer.json()["words"], "word")
    # x1, its duplicate, x2 and x3 say 井盖; one report before the period did.
    assert (words["井盖"]["count"], words["井盖"]["previous"]) == (4, 1)
    assert words["占道经营"]["count"] == 6  # a word of the city's own (data/userdict.txt)
    assert "楼道" not in words  # two reports use it: fewer than min_reports (3)
    assert "联系电话" not in words  # a stop word
    text = answer.text
    assert "13800138000" not in text and "13912345678" not in text and "王小明" not in text
    assert not any(ch.isdigit() for w in words for ch in w)
    assert "张三丰" not in text  # one report alone names him
    two = staff.get("/sentiment/words", params={"min_reports": 2}, headers=KEY).json()
    assert "楼道" in _by(two["words"], "word")  # y1 and y2
    assert staff.get("/sentiment/words", params={"min_reports": 1}, headers=KEY).status_code == 400


def test_hotspots_and_an_emerging_cluster(staff: TestClient):
    spots = staff.get("/sentiment/hotspots", headers=KEY)
    assert spots.status_code == 200, spots.text
    top = spots.json()["hotspots"][0]
    assert top["code"].startswith("310199003") and top["count"] == 6 and top["previous"] == 0
    assert top["lon"] and top["lat"]
    streets = _by(staff.get("/sentiment/hotspots", params={"level": "street"},
                            headers=KEY).json()["hotspots"], "code")  # fmt: skip
    assert streets[S1]["count"] == 7 and streets[S1]["previous"] == 2
    found = staff.get("/sentiment/clusters", headers=KEY)  # the last 7 days
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["eps_m"] == 150.0 and body["min_reports"] == 5
    (cluster,) = body["clusters"]
    assert cluster["category"]["code"] == "EV-C" and cluster["status"] == "new"
    assert cluster["reports"] == 6 and cluster["previous"] == 0
    assert 40 < cluster["radius_m"] < 55 and len(cluster["incident_ids"]) == 6
    # An eps shorter than the reports lie from each other: no cluster.
    tight = staff.get("/sentiment/clusters", params={"eps_m": 3}, headers=KEY)
    assert tight.status_code == 400 and tight.json()["detail"].startswith("query parameter eps_m")
    apart = staff.get("/sentiment/clusters", params={"eps_m": 10}, headers=KEY).json()
    assert apart["clusters"] == []
    table = _csv(staff.get("/sentiment/clusters", params={"format": "csv"}, headers=KEY))
    assert table[1][:5] == ["EV-C", "'=SUM(1+1)占道", "new", "6", "0"]


@pytest.mark.parametrize(
    ("path", "params", "parameter", "words"),
    [
        ("/evaluation/units", {"from": "2026-12-01", "to": "2026-11-01"}, "from", "not before"),
        ("/evaluation/units", {"from": "yesterday"}, "from", "not a date"),
        ("/evaluation/units", {"to": "2026-13-45"}, "to", "not a date"),
        ("/evaluation/units", {"from": "2026-11-01T08:00:00"}, "from", "time zone"),
        ("/evaluation/units", {"from": "1990-01-01", "to": "2090-01-01"}, "from", "longer"),
        ("/evaluation/units", {"from": "1066-10-14"}, "from", "before 1990"),
        ("/evaluation/jurisdictions", {"level": "planet"}, "level", "not one of"),
        ("/sentiment/hotspots", {"level": "planet"}, "level", "not one of"),
        ("/sentiment/categories", {"interval": "month"}, "interval", "not one of"),
        ("/sentiment/categories", {"from": "2016-01-01", "to": "2026-01-01"}, "interval",
         "by week"),
        ("/evaluation/units", {"format": "xlsx"}, "format", "not one of"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_naming_the_parameter(staff: TestClient, path: str, params: dict,
                                                 parameter: str, words: str):  # fmt: skip
    answer = staff.get(path, params=params, headers=KEY)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["parameter"] == parameter and words in answer.json()["detail"]


def test_nul_bytes_strangers_and_unknown_parameters(staff: TestClient):
    nul = staff.get("/evaluation/units?from=2026-11-01%00", headers=KEY)
    assert nul.status_code == 400 and "'from'" in nul.json()["detail"]
    within = staff.get("/evaluation/jurisdictions?within=%00x", headers=KEY)
    assert within.status_code == 400 and "NUL" in within.json()["detail"]
    typo = staff.get("/evaluation/units", params={"form": "2026-11-01"}, headers=KEY)
    assert typo.status_code == 400 and "'form'" in typo.json()["detail"]
    for path in ("/evaluation/units", "/evaluation/jurisdictions", "/sentiment/categories",
                 "/sentiment/words", "/sentiment/hotspots", "/sentiment/clusters"):  # fmt: skip
        assert staff.get(path).status_code == 401, path


def test_a_period_with_no_reports_answers_empty_lists(staff: TestClient):
    quiet = {"from": "2000-01-01", "to": "2000-01-08"}
    for path, key in (("/evaluation/units", "units"),
                      ("/evaluation/jurisdictions", "jurisdictions"),
                      ("/sentiment/categories", "categories"), ("/sentiment/words", "words"),
                      ("/sentiment/hotspots", "hotspots"), ("/sentiment/clusters", "clusters")):  # fmt: skip
        answer = staff.get(path, params=quiet, headers=KEY)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.json()[key] == [], path
        assert answer.json()["from"] == "2000-01-01T00:00:00+08:00"
        assert answer.json()["to"] == "2000-01-09T00:00:00+08:00"  # the whole of the 8th
        table = _csv(staff.get(path, params={**quiet, "format": "csv"}, headers=KEY))
        assert len(table) == 1, path  # the header alone
