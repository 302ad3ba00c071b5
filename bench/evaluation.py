"""Benchmark: the evaluation (一网评效) and sentiment (社情民意) answers over many incidents,
each one SQL query, timed in process (the HTTP around them is thin).

    .venv/bin/python bench/evaluation.py [--incidents 200000] [--size default]

Uses the benchmark cluster in .twin/bench (or TWIN_DATABASE_URL); loads the demo city of
the given size there first if it has none. Makes ``--incidents`` incidents over 90 days
in one transaction, straight in SQL (intake at this volume would take minutes): each in a
random community with its chain, a random leaf category and unit, a timeline of five to
seven steps (dispatched, accepted, started, resolved, closed; some reassigned, sent back,
reopened, supervised) and a description from a few templates, each one different (a
door number); times each answer over the
last 30 days (the default period), and rolls everything back. Record figures in
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from city import demo_city

from twin import db
from twin.incidents import evaluation, sentiment

DESCRIPTIONS = [
    "井盖缺失，路人险些掉入", "垃圾满溢无人清运，异味很大", "占道经营摆摊，影响通行",
    "共享单车乱停放堵塞人行道", "路灯不亮，晚上很黑", "楼道堆物堵塞消防通道",
    "管道爆裂路面冒水", "噪声扰民，夜间施工", "小区门口积水严重", "违章搭建影响采光",
]  # fmt: skip

MAKE = """
WITH chains AS (
    SELECT c.code, row_number() OVER (ORDER BY c.code) AS n,
        (SELECT jsonb_agg(jsonb_build_object('code', a.code, 'name', a.name,
                'level', a.level) ORDER BY a.depth DESC)
         FROM (WITH RECURSIVE up(code, name, level, parent_code, depth) AS (
                 SELECT j.code, j.name, j.level, j.parent_code, 0 FROM jurisdictions j
                 WHERE j.code = c.code
                 UNION ALL
                 SELECT p.code, p.name, p.level, p.parent_code, up.depth + 1
                 FROM jurisdictions p JOIN up ON p.code = up.parent_code)
               SELECT * FROM up) a) AS chain,
        ST_PointOnSurface(c.geom) AS point
    FROM jurisdictions c WHERE c.level = 'community'
), leaves AS (
    SELECT code, row_number() OVER (ORDER BY code) AS n, response_hours, resolve_hours
    FROM incident_categories c
    WHERE NOT EXISTS (SELECT FROM incident_categories k WHERE k.parent_code = c.code)
), units AS (
    SELECT code, row_number() OVER (ORDER BY code) AS n FROM units
), drawn AS (
    SELECT g, now() - random() * interval '90 days' AS at, random() AS fate,
        1 + floor(random() * (SELECT count(*) FROM chains))::int AS place,
        1 + floor(random() * (SELECT count(*) FROM leaves))::int AS leaf,
        1 + floor(random() * (SELECT count(*) FROM units))::int AS unit,
        floor(random() * %(texts)s)::int AS text
    FROM generate_series(1, %(n)s) g
)
INSERT INTO incidents (category_code, channel, description, status, unit_code, dispatch,
    jurisdictions, due_response_at, due_resolve_at, tracking_token, reported_at, geom)
SELECT l.code, 'hotline_12345',
    (%(descriptions)s::text[])[d.text + 1] || '，门牌' || d.g || '号',
    CASE WHEN d.fate < 0.75 THEN 'closed' WHEN d.fate < 0.85 THEN 'in_progress'
         WHEN d.fate < 0.9 THEN 'cancelled' ELSE 'dispatched' END,
    u.code,
    jsonb_build_object('rule', 1, 'how', CASE WHEN d.fate < 0.05 THEN 'manual' ELSE 'rule' END,
        'reason', 'rule #1: bench'),
    c.chain, d.at + l.response_hours * interval '1 hour',
    d.at + l.resolve_hours * interval '1 hour', 'bench-' || d.g, d.at,
    ST_Translate(c.point, (random() - 0.5) * 0.002, (random() - 0.5) * 0.002)
FROM drawn d JOIN chains c ON c.n = d.place JOIN leaves l ON l.n = d.leaf
    JOIN units u ON u.n = d.unit
"""

EVENTS = """
INSERT INTO incident_events (incident_id, at, actor, action, from_status, to_status, note)
SELECT i.id, i.reported_at + s.after * (0.5 + random()) * (i.due_resolve_at - i.reported_at),
    s.actor, s.action, s.from_status, s.to_status, s.note
FROM incidents i
CROSS JOIN LATERAL (VALUES
    (0.0, 'intake', 'reported', NULL, 'reported', '', TRUE),
    (0.0, 'dispatch', 'dispatched', 'reported', 'dispatched', 'rule #1: bench', TRUE),
    (0.05, 'bench', 'reassigned', 'dispatched', 'dispatched', '', i.id % 20 = 0),
    (0.1, 'bench', 'accepted', 'dispatched', 'accepted', '', i.status <> 'dispatched'),
    (0.15, 'bench', 'started', 'accepted', 'in_progress', '', i.status <> 'dispatched'),
    (0.6, 'bench', 'resolved', 'in_progress', 'resolved', '', i.status = 'closed'),
    (0.7, 'bench', 'reopened', 'resolved', 'in_progress', 'x', i.id % 30 = 0),
    (0.8, 'bench', 'closed', 'resolved', 'closed', '', i.status = 'closed'),
    (1.2, 'sla-sweep', 'supervised', 'in_progress', 'in_progress', '', i.id % 11 = 0)
) AS s(after, actor, action, from_status, to_status, note, happens)
WHERE i.tracking_token LIKE 'bench-%' AND s.happens
"""


def _rows(found: dict[str, Any]) -> int:
    """How many rows an answer of ``sentiment`` holds (its list of records)."""
    lists = [v for v in found.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
    return len(lists[0]) if lists else 0


def _time(name: str, call: Callable[[], Any], repeat: int) -> None:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        found = call()
        seconds.append(time.perf_counter() - started)
    size = len(found) if isinstance(found, list) else _rows(found)
    print(f"{name:<36} median {statistics.median(seconds) * 1000:8.1f} ms  "
          f"max {max(seconds) * 1000:8.1f} ms  ({size} rows)")  # fmt: skip


def main() -> None:
    """Make the incidents, time each answer, roll back."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=200_000)
    parser.add_argument("--size", choices=("small", "default", "large"), default="default")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    url, _ = demo_city(args.size)
    print(f"{platform.processor() or platform.machine()}, {args.incidents:,} incidents")
    with db.connect(url) as conn:
        started = time.perf_counter()
        conn.execute(MAKE, {"n": args.incidents, "texts": len(DESCRIPTIONS),
                            "descriptions": DESCRIPTIONS})  # fmt: skip
        conn.execute(EVENTS)
        conn.execute("ANALYZE incidents")
        conn.execute("ANALYZE incident_events")
        events = conn.execute("SELECT count(*) FROM incident_events").fetchone()
        print(f"made in {time.perf_counter() - started:.1f} s ({events[0]:,} events)")
        span = evaluation.period(None, None, now=datetime.now(UTC))
        week = sentiment.default_cluster_period(None, None)
        _time("evaluation.units", lambda: evaluation.units(conn, span), args.repeat)
        _time("evaluation.jurisdictions street",
              lambda: evaluation.jurisdictions(conn, span, level="street"), args.repeat)  # fmt: skip
        _time("evaluation.jurisdictions grid",
              lambda: evaluation.jurisdictions(conn, span, level="grid"), args.repeat)  # fmt: skip
        _time("sentiment.categories day", lambda: sentiment.categories(conn, span), args.repeat)
        sentiment.words_of("预热")  # jieba's dictionary loaded once, before the timing

        def words() -> dict[str, Any]:
            sentiment.words_of.cache_clear()  # every description segmented afresh
            return sentiment.words(conn, span)

        _time("sentiment.words (uncached)", words, args.repeat)
        _time("sentiment.hotspots grid", lambda: sentiment.hotspots(conn, span), args.repeat)
        _time("sentiment.clusters (7 days)", lambda: sentiment.clusters(conn, week), args.repeat)
        conn.rollback()


if __name__ == "__main__":
    main()
