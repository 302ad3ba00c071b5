"""Roles and API keys through the real app: every route says who may call it, keys are
made, stored hashed and revoked, each role may do what it is for and nothing else, a unit's
staff see their unit's work only, a jurisdiction's keys their jurisdiction; and the
server's own SLA sweep."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.access import audience
from api.app import create_app
from tests.helpers import make_data_dir, run_twin, settings_for
from tests.test_intake import KEY, REPORTER, _report
from tests.test_loop import WATERCO, _burst, _move, _quiet_main
from twin import keys
from twin.incidents import loop

ROADS = "U-310199-ROADS"
# FastAPI's own pages (the API document and its viewers) are public by their nature.
FRAMEWORK_PAGES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


@pytest.fixture
def admin(fresh_url: str) -> Iterator[TestClient]:
    settings = settings_for(make_data_dir("twin-access-"), api={"api_keys": {"test-key": "管理员"}})
    with TestClient(create_app(settings, database_url=fresh_url)) as client:
        yield client


def _key(client: TestClient, name: str, role: str, **scope: str) -> dict[str, str]:
    made = client.post("/keys", json={"name": name, "role": role, **scope}, headers=KEY)
    assert made.status_code == 201, made.text
    return {"X-API-Key": made.json()["key"]}


def _routes(routes: list) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # an included router
            yield from _routes(route.original_router.routes)


def test_every_route_declares_who_may_call_it(fresh_url: str):
    app = create_app(settings_for(make_data_dir("twin-access-")), database_url=fresh_url)
    routes = [r for r in _routes(app.routes) if r.path not in FRAMEWORK_PAGES]
    assert len(routes) > 40
    undeclared = [f"{sorted(r.methods)} {r.path}" for r in routes if audience(r) is None]
    assert undeclared == []
    assert all(audience(r) in {"public", *keys.CAPABILITIES} for r in routes)
    # The check bites: a route that names no audience is found.
    bare = APIRouter()
    bare.get("/nobody-said")(lambda: None)
    assert audience(bare.routes[0]) is None  # type: ignore[arg-type]
    by_path = {(r.path, m): audience(r) for r in routes for m in r.methods}
    assert by_path[("/incidents", "POST")] == "report"
    assert by_path[("/incidents/{incident_id}/dispatch", "POST")] == "dispatch"
    assert by_path[("/track/{token}", "GET")] == "public"
    assert by_path[("/keys", "POST")] == "manage_keys"


def test_a_key_made_on_the_command_line_is_stored_hashed_works_and_stops_when_revoked(
    admin: TestClient, fresh_url: str
):
    env = {"TWIN_DATABASE_URL": fresh_url}
    made = run_twin("keys", "add", "调度台-1", "--role", "dispatcher", "--json", env=env)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    assert key.startswith("twin_") and len(key) > 40
    listed = run_twin("keys", "list", "--json", env=env)
    assert listed.returncode == 0 and "调度台-1" in listed.stdout and key not in listed.stdout
    with psycopg.connect(fresh_url) as conn:
        stored = conn.execute("SELECT digest FROM api_keys WHERE name = '调度台-1'").fetchone()
    assert stored == (keys.digest(key),) and key not in stored[0]
    assert admin.get("/incidents", headers={"X-API-Key": key}).status_code == 200
    wrong = run_twin("keys", "add", "x", "--role", "mayor", env=env)
    assert wrong.returncode != 0 and "--role" in wrong.stderr and "dispatcher" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    twice = run_twin("keys", "add", "调度台-1", "--role", "dispatcher", env=env)
    assert twice.returncode != 0 and "already" in twice.stderr
    unknown_unit = run_twin("keys", "add", "y", "--role", "unit_staff", "--unit", "U-NONE", env=env)
    assert unknown_unit.returncode != 0 and "--unit" in unknown_unit.stderr

    fresh = run_twin("keys", "add", "调度台-2", "--role", "dispatcher", "--json", env=env)
    second = json.loads(fresh.stdout)["key"]
    assert run_twin("keys", "revoke", "调度台-2", env=env).returncode == 0
    refused = admin.get("/incidents", headers={"X-API-Key": second})
    assert refused.status_code == 401 and "X-API-Key" in refused.json()["detail"]
    # Revoked over HTTP: at once in this process, even for a key it had just taken.
    assert admin.delete("/keys/调度台-1", headers=KEY).status_code == 204
    assert admin.get("/incidents", headers={"X-API-Key": key}).status_code == 401
    assert admin.delete("/keys/调度台-1", headers=KEY).status_code == 404


def test_each_role_may_do_what_it_is_for_and_is_told_what_it_may_not(
    admin: TestClient, fresh_url: str
):
    incident = _burst(admin, fresh_url)
    engineer = _key(admin, "工程师", "engineer")
    no_dispatch = admin.post(f"/incidents/{incident['id']}/dispatch",
                             json={"unit": ROADS, "version": incident["version"]},
                             headers=engineer)  # fmt: skip
    assert no_dispatch.status_code == 403
    assert (
        "dispatcher" in no_dispatch.json()["detail"] and "engineer" in no_dispatch.json()["detail"]
    )
    assert admin.get("/incidents", headers={"X-API-Key": "twin_guess"}).status_code == 401
    assert admin.get("/incidents").status_code == 401
    assert admin.get("/keys", headers=engineer).status_code == 403

    resident = _key(admin, "市民App", "resident")
    lon, lat = _quiet_main(fresh_url)
    as_hotline = _report(admin, "BJ0110", lon, lat, headers=resident)
    assert as_hotline.status_code == 403 and "resident_photo" in as_hotline.json()["detail"]
    body = {"category": "BJ0110", "location": {"lon": lon, "lat": lat}, "reporter": REPORTER,
            "description": "路灯不亮，13912345678 王小明"}  # fmt: skip
    taken = admin.post("/incidents", json=body, headers=resident)
    assert taken.status_code == 201, taken.text
    seen = taken.json()
    assert seen["channel"] == "resident_photo" and seen["tracking_token"] and seen["id"]
    assert "13912345678" not in taken.text and "王小明" not in taken.text
    assert "reporter" not in seen and "description" not in seen
    assert admin.get(f"/track/{seen['tracking_token']}").status_code == 200
    assert admin.get(f"/incidents/{seen['id']}", headers=resident).status_code == 403
    # Staff see the resident's report in full.
    full = admin.get(f"/incidents/{seen['id']}", headers=KEY).json()
    assert full["reporter"]["phone"] == REPORTER["phone"]

    supervisor = _key(admin, "督办科", "supervisor")
    put = admin.put("/categories/ZZ01", json={"name": "测试类", "attach_radius_m": 30,
                                              "response_hours": 1, "resolve_hours": 2},
                    headers=engineer)  # fmt: skip
    assert put.status_code == 403
    put = admin.put("/categories/ZZ01", json={"name": "测试类", "attach_radius_m": 30,
                                              "response_hours": 1, "resolve_hours": 2},
                    headers=supervisor)  # fmt: skip
    assert put.status_code in (200, 201), put.text


def test_unit_staff_see_and_act_on_their_units_work_only(admin: TestClient, fresh_url: str):
    burst = _burst(admin, fresh_url)  # the water company's
    lon, lat = _quiet_main(fresh_url)
    lamp = _report(admin, "BJ0110", lon, lat, reporter=REPORTER)
    assert lamp.status_code == 201 and (lamp.json()["unit"] or {}).get("code") == ROADS, lamp.text
    lamp = lamp.json()
    water = _key(admin, "自来水-抢修班", "unit_staff", unit=WATERCO)

    listed = admin.get("/incidents", headers=water).json()["incidents"]
    assert {i["unit"]["code"] for i in listed} == {WATERCO} and burst["id"] in {
        i["id"] for i in listed
    }
    assert admin.get("/incidents", params={"unit": ROADS}, headers=water).json()["count"] == 0
    other = admin.get(f"/incidents/{lamp['id']}", headers=water)
    assert other.status_code == 404 and WATERCO in other.json()["detail"]
    assert _move(admin, lamp, "accept").status_code == 200  # the admin may
    refused = admin.post(f"/incidents/{lamp['id']}/transitions",
                         json={"action": "start", "version": lamp["version"] + 1}, headers=water)  # fmt: skip
    assert refused.status_code == 404

    own = admin.get(f"/incidents/{burst['id']}", headers=water)
    assert own.status_code == 200 and own.json()["reporter"] is not None
    accepted = admin.post(f"/incidents/{burst['id']}/transitions",
                          json={"action": "accept", "version": burst["version"]}, headers=water)  # fmt: skip
    assert (
        accepted.status_code == 200 and accepted.json()["timeline"][-1]["actor"] == "自来水-抢修班"
    )
    cancel = admin.post(f"/incidents/{burst['id']}/transitions",
                        json={"action": "cancel", "note": "x", "version": accepted.json()["version"]},
                        headers=water)  # fmt: skip
    assert cancel.status_code == 403 and "unit staff" in cancel.json()["detail"]
    back = admin.post(f"/incidents/{burst['id']}/transitions",
                      json={"action": "send_back", "note": "是小区内部管道，不归我们",
                            "version": accepted.json()["version"]}, headers=water)  # fmt: skip
    assert back.status_code == 200 and back.json()["unit"] is None
    assert admin.get(f"/incidents/{burst['id']}", headers=water).status_code == 404


def test_a_jurisdictions_keys_see_inside_it_only(admin: TestClient, fresh_url: str):
    burst = _burst(admin, fresh_url)
    grid = next(j["code"] for j in burst["jurisdictions"] if j["level"] == "grid")
    with psycopg.connect(fresh_url) as conn:
        elsewhere = conn.execute(
            "SELECT code FROM jurisdictions WHERE level = 'grid' AND code <> %s LIMIT 1", (grid,)
        ).fetchone()[0]  # type: ignore[index]
    inspector = _key(admin, "网格员-本格", "grid_inspector", jurisdiction=grid)
    outsider = _key(admin, "网格员-别格", "grid_inspector", jurisdiction=elsewhere)
    assert burst["id"] in {
        i["id"] for i in admin.get("/incidents", headers=inspector).json()["incidents"]
    }
    assert burst["id"] not in {
        i["id"] for i in admin.get("/incidents", headers=outsider).json()["incidents"]
    }
    assert admin.get(f"/incidents/{burst['id']}", headers=outsider).status_code == 404
    moved = _move(admin, burst, "accept").json()
    moved = _move(admin, moved, "start").json()
    moved = _move(admin, moved, "resolve", note="修好").json()
    closed = admin.post(f"/incidents/{burst['id']}/transitions",
                        json={"action": "close", "note": "现场核查：已修复", "version": moved["version"]},
                        headers=inspector)  # fmt: skip
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    report = _report(admin, "SJ0401", 121.0, 31.0, headers=inspector)
    assert report.status_code == 403  # an inspector reports as grid_inspector
    report = _report(admin, "BJ0110", *_quiet_main(fresh_url), headers=inspector,
                     channel="grid_inspector")  # fmt: skip
    assert report.status_code == 201 and report.json()["channel"] == "grid_inspector"
    # Reporting outside its grid, the inspector is answered what the public sees.
    away = _report(admin, "BJ0110", *_quiet_main(fresh_url), headers=outsider,
                   channel="grid_inspector", reporter=REPORTER)  # fmt: skip
    assert away.status_code == 201 and away.json()["tracking_token"]
    chain = admin.get(f"/incidents/{away.json()['id']}", headers=KEY).json()["jurisdictions"]
    assert ("reporter" in away.json()) == (elsewhere in [j["code"] for j in chain])


def test_keys_over_http_say_what_is_wrong(admin: TestClient, fresh_url: str):
    for body, field in (
        ({"role": "dispatcher"}, "name"),
        ({"name": "a", "role": "mayor"}, "role"),
        ({"name": "a", "role": "unit_staff"}, "unit"),
        ({"name": "a", "role": "unit_staff", "unit": "U-NONE"}, "unit"),
        ({"name": "a", "role": "dispatcher", "jurisdiction": "999"}, "jurisdiction"),
        ({"name": "a\x00b", "role": "dispatcher"}, "name"),
        ({"name": "a", "role": ["admin"]}, "role"),
        ({"name": "a", "role": "dispatcher", "power": 1}, "power"),
        ({"name": "a", "role": "resident", "unit": WATERCO}, "unit"),
    ):
        answer = admin.post("/keys", json=body, headers=KEY)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json().get("parameter") == field, (body, answer.json())
    made = admin.post("/keys", json={"name": "外部系统", "role": "external"}, headers=KEY)
    assert made.status_code == 201
    again = admin.post("/keys", json={"name": "外部系统", "role": "external"}, headers=KEY)
    assert again.status_code == 409
    listed = admin.get("/keys", headers=KEY).json()
    assert [k["name"] for k in listed["keys"]] == ["外部系统"]
    assert made.json()["key"] not in json.dumps(listed, ensure_ascii=False)


def test_the_server_runs_the_sla_sweep_itself_and_one_sweep_at_a_time(fresh_url: str):
    settings = settings_for(make_data_dir("twin-access-"),
                            api={"api_keys": {"test-key": "t"}, "sweep_interval_s": 0.2})  # fmt: skip
    with psycopg.connect(fresh_url, autocommit=True) as holder:
        # Another process's sweep under way: this server's sweeps leave the work to it.
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (loop.SWEEP_LOCK,))
        with TestClient(create_app(settings, database_url=fresh_url)) as client:
            long_ago = (datetime.now(UTC) - timedelta(days=3)).isoformat()
            late = _burst(client, fresh_url, reported_at=long_ago)
            time.sleep(1.0)
            seen = client.get(f"/incidents/{late['id']}", headers=KEY).json()
            assert "supervised" not in [e["action"] for e in seen["timeline"]]
            holder.execute("COMMIT")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                seen = client.get(f"/incidents/{late['id']}", headers=KEY).json()
                if "supervised" in [e["action"] for e in seen["timeline"]]:
                    break
                time.sleep(0.2)
            supervised = [e for e in seen["timeline"] if e["action"] == "supervised"]
            assert len(supervised) == 1 and supervised[0]["actor"] == loop.SWEEP_ACTOR
            assert seen["escalated"]


def test_a_wrong_method_names_every_method_the_path_takes(admin: TestClient):
    for path, methods in (("/incidents", "GET, POST"), ("/open311/v2/requests.json", "GET, POST"),
                          ("/keys", "GET, POST")):  # fmt: skip
        answer = admin.delete(path, headers=KEY)
        assert answer.status_code == 405, (path, answer.text)
        assert answer.headers["allow"] == methods, (path, answer.headers)
        assert methods in answer.text or "use" in answer.text


def test_an_idempotency_key_is_the_callers_own(admin: TestClient, fresh_url: str):
    lon, lat = _quiet_main(fresh_url)
    resident = _key(admin, "市民App-2", "resident")
    mine = _report(admin, "BJ0110", lon, lat, headers={"Idempotency-Key": "r-1"})
    assert mine.status_code == 201
    # Another caller's key of the same text is another key: a new report, no 409 naming ours.
    theirs = admin.post("/incidents", json={"category": "SJ0101", "location": {"lon": lon,
                        "lat": lat}}, headers={**resident, "Idempotency-Key": "r-1"})  # fmt: skip
    assert theirs.status_code == 201 and theirs.json()["id"] != mine.json()["id"]
    again = _report(admin, "BJ0110", lon, lat, headers={"Idempotency-Key": "r-1"})
    assert again.status_code == 200 and again.json()["id"] == mine.json()["id"]


def test_a_data_base_gone_away_is_503_not_500(admin: TestClient, fresh_url: str):
    assert admin.get("/health").status_code == 200
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        # As a restart of the data base does: every connection of the app's pools cut.
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
                     " current_database() AND pid <> pg_backend_pid()")  # fmt: skip
    answers = [admin.get("/health"), admin.get("/incidents", headers=KEY)]
    assert {a.status_code for a in answers} <= {200, 503}
    cut = [a for a in answers if a.status_code == 503]
    assert cut and all(
        a.headers["retry-after"] and "not answering" in a.json()["detail"] for a in cut
    )
