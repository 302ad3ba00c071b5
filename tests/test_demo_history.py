"""The demo city's history of incidents: three months from every channel, through every
path of the closed loop, as the product recorded them, replaced by a reload."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from layers.demo.generate import DemoCity
from layers.demo.history import DAYS, KEY_PREFIX, load_history, plan_history
from layers.demo.load import load_demo
from tests.conftest import _clone, _drop
from twin.incidents import intake
from twin.schema import INCIDENT_CHANNELS

END = datetime(2026, 9, 30, 18, 0, tzinfo=UTC)  # fixed, so the history is reproducible


@pytest.fixture(scope="module")
def history_url(template_url: str, small_city: DemoCity) -> Iterator[str]:
    """A private copy of the small demo with its history loaded once for this module."""
    url = _clone(template_url, "history_module")
    with psycopg.connect(url) as conn:
        load_history(conn, small_city, seed=1, end=END)
    yield url
    _drop(template_url, "history_module")


@pytest.fixture
def hist(history_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(history_url) as conn:
        yield conn
        conn.rollback()


def _column(conn: psycopg.Connection, query: str, params: tuple = ()) -> list:
    return [row[0] for row in conn.execute(query, params)]


def test_every_channel_reports(hist: psycopg.Connection):
    channels = _column(hist, "SELECT DISTINCT channel FROM incidents")
    assert set(channels) == set(INCIDENT_CHANNELS)


def test_every_ending_and_every_path_of_the_loop_is_there(hist: psycopg.Connection):
    statuses = set(_column(hist, "SELECT DISTINCT status FROM incidents"))
    assert {"closed", "cancelled", "duplicate", "not_our_duty"} <= statuses
    actions = set(_column(hist, "SELECT DISTINCT action FROM incident_events"))
    assert {"reported", "dispatched", "accepted", "started", "resolved", "closed", "sent_back",
            "reassigned", "reopened", "cancelled", "not_our_duty", "marked_duplicate", "fused",
            "supervised"} <= actions  # fmt: skip
    # Closed late (resolved after the due time) and on time, both.
    late = hist.execute(
        "SELECT bool_or(e.at > i.due_resolve_at), bool_or(e.at <= i.due_resolve_at)"
        " FROM incidents i JOIN incident_events e ON e.incident_id = i.id"
        " AND e.action = 'resolved'"
    ).fetchone()
    assert late == (True, True)
    assert hist.execute("SELECT count(*) FROM incidents WHERE outside").fetchone()[0] >= 2


def test_open_work_is_overdue_now_and_was_supervised(hist: psycopg.Connection):
    now = datetime.now(UTC)
    overdue = intake.list_incidents(hist, overdue=True)["incidents"]
    assert overdue, "some work is open past its due time"
    supervised = _column(hist, "SELECT DISTINCT incident_id FROM incident_events"
                         " WHERE action = 'supervised'")  # fmt: skip
    assert {i["id"] for i in overdue} & set(supervised)
    assert all(i["due_at"]["resolve"] < now or i["due_at"]["response"] < now for i in overdue)


def test_timelines_run_forward_within_the_three_months(hist: psycopg.Connection):
    rows = hist.execute(
        "SELECT e.incident_id, e.at, i.reported_at FROM incident_events e"
        " JOIN incidents i ON i.id = e.incident_id ORDER BY e.incident_id, e.id"
    ).fetchall()
    assert rows
    start = END - timedelta(days=DAYS)
    previous: dict[int, datetime] = {}
    for incident, at, reported in rows:
        assert start <= at <= END, (incident, at)
        assert at >= reported
        assert at >= previous.get(incident, at), f"incident {incident} goes back in time"
        previous[incident] = at
    first = min(r[2] for r in rows)
    assert first - start < timedelta(days=3)  # it spans the three months


def test_the_day_has_a_rhythm_and_the_categories_their_weight(hist: psycopg.Connection):
    hours = dict(hist.execute(
        "SELECT extract(hour FROM reported_at AT TIME ZONE 'Asia/Shanghai')::int, count(*)"
        " FROM incidents GROUP BY 1").fetchall())  # fmt: skip
    assert sum(hours.get(h, 0) for h in range(9, 12)) > 3 * sum(
        hours.get(h, 0) for h in range(2, 5)
    )
    counts = dict(hist.execute("SELECT category_code, count(*) FROM incidents GROUP BY 1"))
    assert counts.get("SJ0501", 0) > counts.get("SJ0402", 0)
    assert counts.get("SJ0101", 0) > counts.get("SJ0402", 0)
    texts = _column(hist, "SELECT description FROM incidents")
    assert len(set(texts)) > 0.8 * len(texts)
    assert sum("占道经营" in t for t in texts) >= 5  # a hot word for the figures


def test_reporters_are_plainly_fictional(hist: psycopg.Connection):
    reporters = _column(hist, "SELECT reporter FROM incidents WHERE reporter <> '{}'")
    assert reporters
    for person in reporters:
        assert re.fullmatch(r"138-0000-\d{4}", person["phone"]), person
        assert person["name"].endswith("（演示）")
        assert person.get("email", "x@example.invalid").endswith("@example.invalid")


def test_the_same_seed_plans_the_same_history(small_city: DemoCity):
    first = plan_history(small_city, seed=3, end=END)
    again = plan_history(small_city, seed=3, end=END)
    other = plan_history(small_city, seed=4, end=END)
    assert first == again
    assert [(r.at, r.category) for r in first] != [(r.at, r.category) for r in other]


def test_a_second_load_replaces_the_history_and_leaves_other_incidents(
    fresh_url: str, small_city: DemoCity
):
    with psycopg.connect(fresh_url) as conn:
        load_history(conn, small_city, seed=1, end=END, count=30)
        first = conn.execute("SELECT count(*) FROM incidents").fetchone()[0]
        mine = intake.report(conn, category_code="SJ0101", channel="hotline_12345",
                             lon=121.4, lat=31.24, description="not the demo's")  # fmt: skip
        conn.commit()
        load_history(conn, small_city, seed=1, end=END, count=30)
        demo = conn.execute("SELECT count(*) FROM incidents WHERE idempotency_key LIKE %s",
                            (KEY_PREFIX + "%",)).fetchone()[0]  # fmt: skip
        assert demo == first
        assert intake.get(conn, mine.id)["description"] == "not the demo's"
    # Reloading the city takes the old history away first (it refers to the city).
    with psycopg.connect(fresh_url) as conn:
        conn.execute("DELETE FROM incident_events WHERE incident_id = %s", (mine.id,))
        conn.execute("DELETE FROM incidents WHERE id = %s", (mine.id,))
        conn.commit()
        load_demo(conn, small_city)
        assert conn.execute("SELECT count(*) FROM incidents").fetchone()[0] == 0


def test_in_a_log_the_history_step_says_how_far_it_has_come(fresh_url: str):
    """`twin demo` with stderr in a log (no terminal, so no bars): the history step, the
    longest (minutes for the default city), writes a line now and then with the reports
    taken in of the plan's, up to all of them; here a line at each progress call."""
    run = "import sys, cli.common; cli.common.LOG_EVERY_S = 0; from cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    env["TWIN_DATABASE_URL"] = fresh_url
    result = subprocess.run([sys.executable, "-c", run, "demo", "--size", "small"], env=env,
                            capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    said = re.findall(
        r"^history of incidents: ([\d,]+)/([\d,]+) \(\d+:\d\d:\d\d\)$", result.stderr, re.M
    )
    done = [int(d.replace(",", "")) for d, _ in said]
    totals = {int(t.replace(",", "")) for _, t in said}
    assert len(totals) == 1 and len(done) > 2, result.stderr
    (total,) = totals
    assert done[0] == 0 and done[-1] == total and done == sorted(done), said
    assert f"{total:,} incidents" in result.stderr  # the summary counts the same reports
