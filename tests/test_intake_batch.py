"""Reports that arrive together are taken together (intake.take, one transaction, and the
API's batches of concurrent POST /incidents): each is still attached, dispatched, fused
and answered as if alone; one refused does not sink the others; a retry under one key
makes one incident however many arrive at once."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.routes import intake as intake_routes
from tests.helpers import make_data_dir, settings_for
from tests.test_fusion import PLAIN, _east
from tests.test_intake import KEY, _report, _water_main
from twin import db, spatial
from twin.errors import Conflict, InvalidInput
from twin.incidents import categories, intake


@pytest.fixture
def staff(fresh_url: str) -> Iterator[TestClient]:
    settings = settings_for(make_data_dir("twin-batch-"), api={"api_keys": {"test-key": "接线员"}})
    with TestClient(create_app(settings, database_url=fresh_url)) as client:
        yield client


def _points(url: str, count: int) -> list[tuple[float, float]]:
    """``count`` points on demo water mains of the water company, each over 230 m from
    the others (管道爆裂 fuses within 100 m, or on one main), so no two fuse."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_LineInterpolatePoint(geom, 0.5) AS p, id"
            " FROM pipes WHERE network = 'water' AND owner_unit = 'U-310199-WATERCO') m"
            " ORDER BY id"
        ).fetchall()
    chosen: list[tuple[float, float]] = []
    for x, y in rows:
        if all(math.dist((x, y), c) > 0.0025 for c in chosen):  # ≥ 230 m here
            chosen.append((float(x), float(y)))
            if len(chosen) == count:
                return chosen
    raise AssertionError(f"the demo has {len(chosen)} water mains far apart, not {count}")


def _alone(url: str, point: tuple[float, float]) -> dict:
    """What one report of a burst water main at ``point`` is answered alone, rolled back."""
    with db.connect(url) as conn, conn.transaction(force_rollback=True):
        view = intake.report(conn, category_code="SJ0401", channel="hotline_12345",
                             lon=point[0], lat=point[1]).view  # fmt: skip
    return view


def test_many_reports_at_once_are_each_attached_and_dispatched_as_alone(
    staff: TestClient, fresh_url: str
):
    points = _points(fresh_url, 20)
    expected = [_alone(fresh_url, p) for p in points]
    # Hold the incidents table, so the first takers wait and the others queue behind
    # them: once let go, they are taken several at a time.
    holder = psycopg.connect(fresh_url)
    holder.execute("LOCK TABLE incidents IN EXCLUSIVE MODE")
    with ThreadPoolExecutor(max_workers=len(points)) as pool:
        sent = [pool.submit(_report, staff, "SJ0401", *p) for p in points]
        threading.Event().wait(1.0)
        holder.rollback()
        answers = [f.result() for f in sent]
    holder.close()
    assert [a.status_code for a in answers] == [201] * len(points), answers[0].text
    owned = [a.json()["unit"] for a in answers]
    assert owned.count({"code": "U-310199-WATERCO", "name": expected[0]["unit"]["name"]}) > 10
    for answer, alone in zip(answers, expected, strict=True):
        got = answer.json()
        for field in ("status", "unit", "dispatch", "escalated", "assets", "jurisdictions"):
            assert got[field] == alone[field], field
        assert [e["action"] for e in got["timeline"]] == [e["action"] for e in alone["timeline"]]
        stored = staff.get(f"/incidents/{got['id']}", headers=KEY).json()
        assert stored["unit"] == got["unit"] and stored["timeline"] == got["timeline"]
    with psycopg.connect(fresh_url) as conn:
        taken = conn.execute(
            "SELECT count(*), max(features), sum(features) FROM layer_changes"
            " WHERE layer = 'incidents' AND operation = 'intake'"
        ).fetchone()
        counted = conn.execute(
            "SELECT feature_count FROM layer_catalogue WHERE name = 'incidents'"
        ).fetchone()
    assert taken is not None and taken[2] == len(points)
    assert taken[1] > 1 and taken[0] < len(points)  # some were taken together, one change each
    listed = staff.get("/layers", headers=KEY).json()
    layer = next(x for x in listed["layers"] if x["name"] == "incidents")
    assert counted is not None and layer["feature_count"] >= len(points)


def test_two_reports_of_one_problem_taken_together_are_fused(fresh_url: str):
    lon, lat, _ = _water_main(fresh_url)
    with db.connect(fresh_url) as conn:
        first, second, apart = intake.take(conn, [
            intake.check(category_code=PLAIN, channel="hotline_12345", lon=lon, lat=lat),
            intake.check(category_code=PLAIN, channel="grid_inspector",
                         lon=_east(lon, lat, 20)[0], lat=lat),
            intake.check(category_code=PLAIN, channel="grid_inspector",
                         lon=_east(lon, lat, 80)[0], lat=lat),
        ])  # fmt: skip
        assert isinstance(first, intake.Incident) and isinstance(second, intake.Incident)
        assert isinstance(apart, intake.Incident)
        assert first.view["status"] != "duplicate" and first.view["duplicate_of"] is None
        assert second.view["status"] == "duplicate"
        assert second.view["duplicate_of"] == first.id and second.view["unit"] is None
        assert "same category within 50 m and 24 h" in second.view["dispatch"]["reason"]
        assert apart.view["duplicate_of"] is None  # 80 m: beyond the 50 m radius
        original = intake.get(conn, first.id)
        assert original["timeline"][-1]["action"] == "fused"
        assert original["timeline"][-1]["note"] == second.view["timeline"][-1]["note"]
        # A third report, later and alone, joins the first too (the earliest original).
        third = intake.report(conn, category_code=PLAIN, channel="resident_photo",
                              lon=_east(lon, lat, 10)[0], lat=lat)  # fmt: skip
        assert third.view["duplicate_of"] == first.id


def test_one_refused_report_does_not_sink_the_others(staff: TestClient, fresh_url: str):
    points = _points(fresh_url, 6)
    with db.connect(fresh_url) as conn:
        taken = intake.take(conn, [
            intake.check(category_code="SJ0401", channel="hotline_12345", lon=x, lat=y)
            for x, y in points[:2]
        ] + [intake.check(category_code="NO-SUCH", channel="hotline_12345", lon=points[2][0],
                          lat=points[2][1])])  # fmt: skip
        assert [type(t) for t in taken] == [intake.Incident, intake.Incident, InvalidInput]
        assert "is not a category" in str(taken[2])
        stored = conn.execute("SELECT count(*) FROM incidents").fetchone()
    assert stored is not None and stored[0] == 2
    # Over HTTP, at once: the unknown category is a 400 naming it, the others land.
    bodies = [("SJ0401", p) for p in points[3:]] + [("NO-SUCH", points[0])]
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        answers = list(pool.map(lambda b: _report(staff, b[0], *b[1]), bodies))
    assert [a.status_code for a in answers] == [201, 201, 201, 400]
    assert "category 'NO-SUCH' is not a category" in answers[-1].json()["detail"]


def test_the_same_key_at_once_makes_one_incident(staff: TestClient, fresh_url: str):
    lon, lat = _points(fresh_url, 1)[0]
    headers = {"Idempotency-Key": "retry-1"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(
            lambda _: _report(staff, "SJ0401", lon, lat, headers=headers), range(8)))  # fmt: skip
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert all(a.headers.get("Idempotent-Replayed") == "true"
               for a in answers if a.status_code == 200)  # fmt: skip
    with psycopg.connect(fresh_url) as conn:
        stored = conn.execute("SELECT count(*) FROM incidents").fetchone()
    assert stored is not None and stored[0] == 1
    # Within one take: the same key twice is one incident; another payload under it, 409.
    with db.connect(fresh_url) as conn:
        same, again, other = intake.take(conn, [
            intake.check(category_code=PLAIN, channel="resident_photo", lon=lon, lat=lat,
                         idempotency_key="k2"),
            intake.check(category_code=PLAIN, channel="resident_photo", lon=lon, lat=lat,
                         idempotency_key="k2"),
            intake.check(category_code=PLAIN, channel="resident_photo", lon=lon, lat=lat,
                         description="another", idempotency_key="k2"),
        ])  # fmt: skip
        assert isinstance(same, intake.Incident) and not same.replayed
        assert isinstance(again, intake.Incident) and again.replayed and again.id == same.id
        assert isinstance(other, Conflict) and str(same.id) in str(other)


def test_batches_go_on_when_their_connection_is_lost(staff: TestClient, fresh_url: str):
    """Every batch is taken on the one connection of intake's own pool: when the data base
    drops it, a report in flight hears 503 (never a 500), and the next is taken on a new
    one."""
    first, second, third = _points(fresh_url, 3)
    assert _report(staff, "SJ0401", *first).status_code == 201
    pool = getattr(staff.app.state, intake_routes.POOL)  # type: ignore[attr-defined]
    with pool.connection() as conn:  # the one connection the batches are taken on
        backend = conn.info.backend_pid
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (backend,))
    lost = _report(staff, "SJ0401", *second)
    assert lost.status_code in (201, 503), lost.text
    if lost.status_code == 503:
        assert lost.headers["Retry-After"] and "data base" in lost.json()["detail"]
    again = _report(staff, "SJ0401", *third)
    assert again.status_code == 201, again.text
    with pool.connection() as conn:
        assert conn.info.backend_pid != backend
    with psycopg.connect(fresh_url) as conn:
        stored = conn.execute("SELECT count(*) FROM incidents").fetchone()
    assert stored is not None and stored[0] == (3 if lost.status_code == 201 else 2)


def test_attach_of_many_points_at_once_is_each_points_own(demo_url: str):
    """The nearest assets of many reports taken together (one statement) are those each
    report alone finds, for categories of every kind of layer, networks held included."""
    rng = np.random.default_rng(5)
    with db.connect(demo_url) as conn:
        west, south, east, north = conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM"
            " (SELECT ST_Extent(geom) e FROM pipes) x"
        ).fetchone()  # type: ignore[misc]
        kinds = [c for c in categories.list_categories(conn) if c.asset_layers]
        asked = []
        for lon, lat in rng.uniform((west, south), (east, north), (150, 2)).tolist():
            category = kinds[int(rng.integers(len(kinds)))]
            layers, networks = categories.attach_layers(category)
            asked.append(spatial.Near(lon, lat, layers, category.attach_radius_m * 4, networks))
        together = spatial.nearest_within_many(conn, asked, k=3,
                                               columns=("source_id", "owner_unit"))  # fmt: skip
        alone = [spatial.nearest_within(conn, a.lon, a.lat, layers=a.layers, k=3,
                                        max_distance_m=a.max_distance_m, networks=a.networks,
                                        columns=("source_id", "owner_unit")) for a in asked]  # fmt: skip
    # The same features at the same distances; of features at one distance (two pipes'
    # shared end) the one given may differ, nearest_within taking the index's order.
    assert [list(t) for t in together] == [list(a) for a in alone]
    for t, a in zip(together, alone, strict=True):
        for layer, features in a.items():
            mine = t[layer]
            assert [f["distance_m"] for f in mine] == [f["distance_m"] for f in features]
            ties = {d for d in (f["distance_m"] for f in features)
                    if [f["distance_m"] for f in features].count(d) > 1
                    or d == features[-1]["distance_m"]}  # fmt: skip
            assert [f for f in mine if f["distance_m"] not in ties] == [
                f for f in features if f["distance_m"] not in ties
            ]
    assert sum(len(f) for answer in alone for f in answer.values()) > 100  # not all empty
    assert any(a.networks for a in asked)


def test_attach_finds_a_long_edge_whose_arc_bulges_towards_the_report(fresh_url: str):
    """A feature with a long edge (a main of 0.5°, 47 km) bulges poleward of its vertices
    as a geodesic arc, by some 27 m at 31° N: a report 44 m north of the straight line in
    degrees lies 17 m from it on the globe, and is attached to it, as nearest_within finds
    it, though attach searches the narrow features in a box that stops short of the line."""
    lon, lat = 121.25, 31.5004  # north of the demo city: no other pipe near
    with db.connect(fresh_url) as conn:
        (main,) = conn.execute(
            "INSERT INTO pipes (network, geom) VALUES ('water', ST_SetSRID(ST_MakeLine("
            "ST_MakePoint(121.0, 31.5), ST_MakePoint(121.5, 31.5)), 4326)) RETURNING id"
        ).fetchone()  # type: ignore[misc]
        box = spatial._search_box(lon, lat, 30, spatial._SMALL_ARC_MARGIN_DEG)
        assert box is not None and lat - 31.5 > box[1]  # beyond the narrow box
        asked = spatial.Near(lon, lat, ["pipes"], 30)
        (together,) = spatial.nearest_within_many(conn, [asked], k=3, columns=("source_id",))
        alone = spatial.nearest_within(conn, lon, lat, layers=["pipes"], k=3, max_distance_m=30,
                                       columns=("source_id",))  # fmt: skip
    assert [f["id"] for f in together["pipes"]] == [str(main)]
    assert together["pipes"][0]["distance_m"] == alone["pipes"][0]["distance_m"] < 20
