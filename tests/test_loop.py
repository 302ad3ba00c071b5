"""The closed loop through the real app on a real data base: every state to closed,
send-back and redispatch, reopen, the endings, refused transitions and stale versions,
and the SLA sweep (督办) from the command line."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.helpers import make_data_dir, run_twin, settings_for
from tests.test_intake import KEY, REPORTER, _report
from twin.incidents import loop

WATERCO = "U-310199-WATERCO"


@pytest.fixture
def staff(fresh_url: str) -> Iterator[TestClient]:
    settings = settings_for(make_data_dir("twin-loop-"), api={"api_keys": {"test-key": "调度员"}})
    with TestClient(create_app(settings, database_url=fresh_url)) as client:
        yield client


def _quiet_main(url: str) -> tuple[float, float]:
    """A point on a water main of the water company with no incident within 300 m: a
    burst there is a new incident, not one fused with an earlier test's report."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_LineInterpolatePoint(geom, 0.5) AS p, id"
            " FROM pipes f WHERE network = 'water' AND owner_unit = %s AND NOT EXISTS (SELECT"
            " FROM incidents i WHERE ST_DWithin(i.geom::geography, f.geom::geography, 300)))"
            " x ORDER BY id LIMIT 1",
            (WATERCO,),
        ).fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


def _burst(staff: TestClient, url: str, **more: object) -> dict:
    lon, lat = _quiet_main(url)
    sent = _report(staff, "SJ0401", lon, lat, reporter=REPORTER, **more)
    assert sent.status_code == 201, sent.text
    assert sent.json()["unit"]["code"] == WATERCO
    return sent.json()


def _move(staff: TestClient, incident: dict, action: str, **body: object):
    return staff.post(
        f"/incidents/{incident['id']}/transitions",
        json={"action": action, "version": incident["version"], **body},
        headers=KEY,
    )


def _walk(staff: TestClient, incident: dict, *steps: str | tuple[str, dict]) -> dict:
    for step in steps:
        action, body = (step, {}) if isinstance(step, str) else step
        moved = _move(staff, incident, action, **body)
        assert moved.status_code == 200, (action, moved.text)
        assert moved.json()["version"] == incident["version"] + 1
        assert moved.headers["etag"] == f'"{moved.json()["version"]}"'
        incident = moved.json()
    return incident


def _actions(incident: dict) -> list[tuple[str, str | None, str | None]]:
    return [(e["action"], e["from_status"], e["to_status"]) for e in incident["timeline"]]


def test_a_report_walks_every_state_to_closed_and_the_timeline_tells_it(
    staff: TestClient, fresh_url: str
):
    incident = _burst(staff, fresh_url)
    done = _walk(staff, incident, "accept", "start", ("resolve", {"note": "换管 2 m"}),
                 ("close", {"note": "回访满意"}))  # fmt: skip
    assert done["status"] == "closed" and done["unit"]["code"] == WATERCO
    assert done["version"] == 5 and done["reopens"] == 0
    assert _actions(done) == [
        ("reported", None, "reported"), ("dispatched", "reported", "dispatched"),
        ("accepted", "dispatched", "accepted"), ("started", "accepted", "in_progress"),
        ("resolved", "in_progress", "resolved"), ("closed", "resolved", "closed"),
    ]  # fmt: skip
    steps = done["timeline"]
    assert all(e["actor"] == "调度员" for e in steps[2:])
    assert steps[4]["note"] == "换管 2 m"
    assert [e["at"] for e in steps] == sorted(e["at"] for e in steps)
    # The resident follows it, without anyone's notes.
    public = staff.get(f"/track/{incident['tracking_token']}").json()
    assert public["status"] == "closed" and len(public["timeline"]) == 6
    assert "note" not in json.dumps(public) and "换管" not in json.dumps(public)
    # An ending of the loop: nothing is allowed from closed but reopening.
    refused = _move(staff, done, "accept")
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert "is closed" in refused.json()["detail"] and "reopen" in refused.json()["detail"]
    # Every step is a change of the incidents layer.
    log = staff.get("/changes", params={"layer": "incidents", "limit": 1000})
    assert log.status_code == 200, log.text
    assert [c["operation"] for c in log.json()["changes"]].count("edit") == 4


def test_send_back_clears_the_unit_and_the_dispatcher_dispatches_anew(
    staff: TestClient, fresh_url: str
):
    incident = _burst(staff, fresh_url)
    accepted = _walk(staff, incident, "accept")
    no_reason = _move(staff, accepted, "send_back")
    assert no_reason.status_code == 400 and no_reason.json()["parameter"] == "note"
    back = _walk(staff, accepted, ("send_back", {"note": "非我单位管辖: 燃气管"}))
    assert back["status"] == "reported" and back["unit"] is None
    assert "sent back" in back["dispatch"]["reason"] and WATERCO in back["dispatch"]["reason"]
    assert staff.get("/incidents", params={"unit": WATERCO}, headers=KEY).json()["count"] == 0
    # Only a dispatch goes on from here; a unit cannot accept what no unit has.
    refused = _move(staff, back, "accept")
    assert refused.status_code == 409 and "is reported" in refused.json()["detail"]
    assert "dispatch" in refused.json()["detail"]
    again = _walk(staff, back, ("dispatch", {"unit": "U-310199-GAS", "note": "燃气公司"}))
    assert again["unit"]["code"] == "U-310199-GAS"
    assert again["status"] == "dispatched" and again["dispatch"]["how"] == "manual"
    moved = _walk(staff, again, "accept", ("reassign", {"unit": WATERCO, "note": "确是水管"}))
    assert moved["unit"]["code"] == WATERCO and moved["status"] == "dispatched"
    assert [a for a, _, _ in _actions(moved)][2:] == [
        "accepted", "sent_back", "dispatched", "accepted", "reassigned",
    ]  # fmt: skip


def test_reopen_is_counted_and_goes_back_to_the_work(staff: TestClient, fresh_url: str):
    incident = _burst(staff, fresh_url)
    closed = _walk(staff, incident, "accept", "start", "resolve", "close")
    reopened = _walk(staff, closed, ("reopen", {"note": "又冒水了"}))
    assert reopened["status"] == "in_progress" and reopened["reopens"] == 1
    resolved = _walk(staff, reopened, "resolve")
    # Verification fails before closing: back to the unit, which must accept it again.
    again = _walk(staff, resolved, ("reopen", {"note": "未修好", "to": "dispatched"}))
    assert again["status"] == "dispatched" and again["reopens"] == 2
    wrong = _move(staff, again, "reopen", note="x")
    assert wrong.status_code == 409 and "is dispatched" in wrong.json()["detail"]
    bad_to = _move(staff, _walk(staff, again, "accept", "start", "resolve"), "reopen",
                   note="x", to="closed")  # fmt: skip
    assert bad_to.status_code == 400 and bad_to.json()["parameter"] == "to"


def test_each_ending_and_nothing_after_it(staff: TestClient, fresh_url: str):
    first = _burst(staff, fresh_url)
    cancelled = _walk(staff, _burst(staff, fresh_url), ("cancel", {"note": "报错了"}))
    assert cancelled["status"] == "cancelled"
    twin = _walk(staff, _burst(staff, fresh_url), ("duplicate", {"duplicate_of": first["id"]}))
    assert twin["status"] == "duplicate" and twin["duplicate_of"] == first["id"]
    duty = _walk(staff, _burst(staff, fresh_url), ("not_our_duty", {"note": "私人小区内部管道"}))
    assert duty["status"] == "not_our_duty"
    for ended in (cancelled, twin, duty):
        refused = _move(staff, ended, "reopen", note="x")
        assert refused.status_code == 409, refused.text
        assert f"is {ended['status']}" in refused.json()["detail"]
        assert "ending" in refused.json()["detail"]
    # A duplicate names a stored incident, not itself, not another duplicate.
    other = _burst(staff, fresh_url)
    for original, words in ((other["id"], "itself"), (10**9, "no incident"),
                            (twin["id"], "itself a duplicate"), ("1", "incident id")):  # fmt: skip
        refused = _move(staff, other, "duplicate", duplicate_of=original)
        assert refused.status_code == 400, refused.text
        assert words in refused.json()["detail"] and refused.json()["parameter"] == "duplicate_of"
    assert staff.get(f"/incidents/{other['id']}", headers=KEY).json()["version"] == 1


def test_of_two_updates_on_the_same_version_one_wins(staff: TestClient, fresh_url: str):
    incident = _burst(staff, fresh_url)
    answers: list[int] = []
    start = threading.Barrier(2)

    def accept() -> None:
        start.wait()
        answers.append(_move(staff, incident, "accept").status_code)

    threads = [threading.Thread(target=accept) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200, 409]
    now = staff.get(f"/incidents/{incident['id']}", headers=KEY).json()
    assert now["version"] == 2 and [a for a, _, _ in _actions(now)].count("accepted") == 1
    # The version as If-Match: a stale one is 412, the current one goes through.
    path = f"/incidents/{incident['id']}/transitions"
    stale = staff.post(path, json={"action": "start"}, headers={**KEY, "If-Match": '"1"'})
    assert stale.status_code == 412 and "version 2, not 1" in stale.json()["detail"]
    both = staff.post(
        path, json={"action": "start", "version": 2}, headers={**KEY, "If-Match": '"1"'}
    )
    assert both.status_code == 400 and "disagree" in both.json()["detail"]
    weak = staff.post(path, json={"action": "start"}, headers={**KEY, "If-Match": 'W/"2"'})
    assert weak.status_code == 412 and "weak" in weak.json()["detail"]  # compared strongly
    fresh = staff.post(path, json={"action": "start"}, headers={**KEY, "If-Match": '"2"'})
    assert fresh.status_code == 200 and fresh.json()["status"] == "in_progress"
    # In the body, a stale version is a 409.
    body = staff.post(path, json={"action": "resolve", "version": 2}, headers=KEY)
    assert body.status_code == 409 and "version 3" in body.json()["detail"]


def test_bad_transitions_are_clear_4xx_and_change_nothing(staff: TestClient, fresh_url: str):
    incident = _burst(staff, fresh_url)
    path = f"/incidents/{incident['id']}/transitions"
    cases = [
        ({"action": "teleport", "version": 1}, "action"),
        ({"action": 3, "version": 1}, "action"),
        ({"version": 1}, "action"),
        ({"action": "accept"}, "version"),
        ({"action": "accept", "version": "1"}, "version"),
        ({"action": "accept", "version": True}, "version"),
        ({"action": "accept", "version": 10**30}, "version"),
        ({"action": "accept", "version": 1.5}, "version"),
        ({"action": "accept", "version": 1, "note": "a\x00b"}, "note"),
        ({"action": "accept", "version": 1, "note": "长" * 2001}, "note"),
        ({"action": "accept", "version": 1, "note": ["x"]}, "note"),
        ({"action": "accept", "version": 1, "unit": WATERCO}, "unit"),
        ({"action": "accept", "version": 1, "colour": "red"}, "colour"),
        ({"action": "reassign", "version": 1}, "unit"),
        ({"action": "reassign", "version": 1, "unit": "NO-SUCH"}, "unit"),
    ]
    for body, parameter in cases:
        answer = staff.post(path, json=body, headers=KEY)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json().get("parameter") == parameter, (body, answer.json())
    for raw in ('{"action": "accept", "version": NaN}', "[1]", "not json"):
        answer = staff.post(path, content=raw, headers={**KEY, "Content-Type": "application/json"})
        assert 400 <= answer.status_code < 500, (raw, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    bad_header = staff.post(path, json={"action": "accept"}, headers={**KEY, "If-Match": "x"})
    assert bad_header.status_code == 400
    assert staff.post("/incidents/999999999/transitions", json={"action": "accept", "version": 1},
                      headers=KEY).status_code == 404  # fmt: skip
    assert staff.post(path, json={"action": "accept", "version": 1}).status_code == 401
    after = staff.get(f"/incidents/{incident['id']}", headers=KEY).json()
    assert after["version"] == 1 and after["status"] == "dispatched"
    assert len(after["timeline"]) == 2


def test_the_sweep_supervises_overdue_work_once_and_escalates_it(staff: TestClient, fresh_url: str):
    long_ago = (datetime.now(UTC) - timedelta(days=10)).isoformat()
    late = _burst(staff, fresh_url, reported_at=long_ago)  # 1 h to answer, 12 h to resolve
    waiting = _walk(staff, _burst(staff, fresh_url, reported_at=long_ago),
                    ("send_back", {"note": "不归我们"}))  # fmt: skip
    on_time = _burst(staff, fresh_url)
    listed = staff.get("/incidents", params={"overdue": "true"}, headers=KEY).json()
    assert {i["id"] for i in listed["incidents"]} == {late["id"], waiting["id"]}
    not_late = staff.get("/incidents", params={"overdue": "false"}, headers=KEY).json()
    assert on_time["id"] in {i["id"] for i in not_late["incidents"]}
    assert staff.get("/incidents", params={"overdue": "maybe"}, headers=KEY).status_code == 400

    swept = run_twin("incidents", "sweep", "--json", env={"TWIN_DATABASE_URL": fresh_url})
    assert swept.returncode == 0, swept.stderr
    done = {d["id"]: d for d in json.loads(swept.stdout)["supervised"]}
    assert set(done) == {late["id"], waiting["id"]}
    assert done[late["id"]]["clocks"] == ["response", "resolve"]

    late_now = staff.get(f"/incidents/{late['id']}", headers=KEY).json()
    supervised = [e for e in late_now["timeline"] if e["action"] == "supervised"]
    assert len(supervised) == 1 and supervised[0]["actor"] == "sla-sweep"
    assert "督办" in supervised[0]["note"] and "response overdue" in supervised[0]["note"]
    assert late_now["escalated"] and late_now["unit"]["code"] == WATERCO  # it keeps the work
    assert late_now["version"] == late["version"] + 1
    # Work no unit had goes to the centre of its jurisdiction.
    waiting_now = staff.get(f"/incidents/{waiting['id']}", headers=KEY).json()
    assert waiting_now["status"] == "dispatched" and waiting_now["escalated"]
    assert waiting_now["unit"]["code"] == done[waiting["id"]]["centre"]
    assert waiting_now["dispatch"]["how"] == "escalation"

    again = run_twin("incidents", "sweep", env={"TWIN_DATABASE_URL": fresh_url})
    assert again.returncode == 0 and "0 incidents newly supervised" in again.stdout
    assert (
        staff.get(f"/incidents/{late['id']}", headers=KEY).json()["version"]
        == (late_now["version"])
    )
    # Accepted, the response clock stops; the resolution clock was marked already.
    accepted = _walk(staff, late_now, "accept")
    third = run_twin("incidents", "sweep", "--json", env={"TWIN_DATABASE_URL": fresh_url})
    assert json.loads(third.stdout)["count"] == 0
    assert [e["action"] for e in accepted["timeline"]].count("supervised") == 1


def test_reopened_work_has_its_clocks_anew_and_is_supervised_again(
    staff: TestClient, fresh_url: str
):
    long_ago = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    late = _burst(staff, fresh_url, reported_at=long_ago)
    with psycopg.connect(fresh_url) as conn:
        first = loop.sweep(conn)
    assert [(d["id"], d["clocks"]) for d in first] == [(late["id"], ["response", "resolve"])]
    before = staff.get(f"/incidents/{late['id']}", headers=KEY).json()
    done = _walk(staff, before, "accept", "start", ("resolve", {"note": "修好了"}))
    reopened = _walk(staff, done, ("reopen", {"note": "又漏了", "to": "dispatched"}))
    due = {k: datetime.fromisoformat(v) for k, v in reopened["due_at"].items()}
    now = datetime.now(UTC)
    # 重办: the category's hours again from the reopening (1 h to answer, 12 h to resolve).
    assert timedelta(minutes=55) < due["response"] - now < timedelta(hours=1, minutes=5)
    assert timedelta(hours=11, minutes=55) < due["resolve"] - now < timedelta(hours=12, minutes=5)
    with psycopg.connect(fresh_url) as conn:
        assert loop.sweep(conn) == []  # within its new times
        later = loop.sweep(conn, now=now + timedelta(hours=13))
    assert [(d["id"], d["clocks"]) for d in later] == [(late["id"], ["response", "resolve"])]
