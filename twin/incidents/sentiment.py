"""Public sentiment (社情民意): what residents report about, where, and what is new, over a
period against the period of the same length before it. Every report counts here, the
duplicates fusion joined to an incident too: each is a voice. Nothing personal is read:
not the reporter's contacts (never selected), and no word of a description that only
one or two reports hold (a name, a door number), no word with a digit (a phone number, a
plate). No HTTP here.

- ``categories``: reports per category per day or week, with the change against the
  previous period.
- ``words``: hot words of the descriptions, by the reports that use them, segmented with
  jieba (its dictionary ships in its package: no network), with the words of city
  management of ``data/userdict.txt``, less the stop words of ``data/stopwords.txt``.
- ``hotspots``: reports per jurisdiction of a level (the grids of 网格化管理 by default),
  now against before.
- ``clusters``: emerging clusters, ``ST_ClusterDBSCAN`` over the period (by default the
  last 7 days) per category, in metres in the UTM zone of the reports; a cluster is
  reported when it is new (fewer than ``min_reports`` reports of its category within
  ``eps_m`` of its members in the previous period) or grew (more reports than there).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections import Counter
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row

from twin.errors import InvalidInput
from twin.incidents.evaluation import ZONE, Period, check_level, period

INTERVALS = {"day": timedelta(days=1), "week": timedelta(days=7)}
MAX_BUCKETS = 400
MAX_TEXTS = 20_000  # distinct descriptions segmented per answer, the newest first
MAX_WORDS = 500
MIN_REPORTS_FLOOR = 2  # a word one report alone holds is never shown
MAX_LIMIT = 1000
CLUSTER_DAYS = 7
EPS_M = (10.0, 5000.0)
IDS_PER_CLUSTER = 100
# A word worth counting: two or more Chinese characters, or a Latin word of three letters
# or more; anything with a digit, a sign or punctuation is not.
_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]{2,}|[a-z]{3,}")
_DATA = resources.files("twin.incidents").joinpath("data")
_lock = threading.Lock()
_tokenizer: Any = None


def _change(now: int, before: int) -> dict[str, Any]:
    return {
        "count": now, "previous": before, "change": now - before,
        "change_pct": None if before == 0 else round(100 * (now - before) / before, 1),
    }  # fmt: skip


def check_interval(interval: Any) -> str:
    """``day`` or ``week``; InvalidInput (option ``interval``) otherwise."""
    if not isinstance(interval, str) or interval not in INTERVALS:
        shown = str(interval).replace("\x00", "")[:20]
        raise InvalidInput(f"interval {shown!r} is not one of {', '.join(INTERVALS)}",
                           option="interval")  # fmt: skip
    return interval


def _bucket_starts(span: Period, interval: str) -> list[str]:
    """The local dates (``ZONE``) on which the buckets of ``span`` begin, as PostgreSQL's
    date_trunc cuts them (a week begins on Monday)."""
    first = span.start.astimezone(ZONE).replace(tzinfo=None)
    first = first.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        first -= timedelta(days=first.weekday())
    last = (span.end - timedelta(microseconds=1)).astimezone(ZONE).replace(tzinfo=None)
    count = (last - first) // INTERVALS[interval] + 1
    if count > MAX_BUCKETS:
        raise InvalidInput(f"{count} {interval}s are more than {MAX_BUCKETS}: ask by week, or "
                           "for a shorter period", option="interval")  # fmt: skip
    return [(first + i * INTERVALS[interval]).date().isoformat() for i in range(count)]


def categories(
    conn: psycopg.Connection, span: Period, *, interval: str = "day", scope: str | None = None
) -> dict[str, Any]:
    """Reports per category in ``span``: each category's ``count``, ``previous`` (the
    period before), ``change``, ``change_pct`` and ``series`` (counts per bucket of
    ``buckets``), the most reported first. One query."""
    interval = check_interval(interval)
    buckets = _bucket_starts(span, interval)
    before = span.previous
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            SELECT i.category_code AS code, c.name,
                CASE WHEN i.reported_at >= %(start)s THEN date_trunc(%(interval)s,
                    (i.reported_at AT TIME ZONE 'UTC') + %(offset)s)::date END AS bucket,
                count(*) AS n
            FROM incidents i JOIN incident_categories c ON c.code = i.category_code
            WHERE i.reported_at >= %(before)s AND i.reported_at < %(end)s
              AND (%(scope)s::text IS NULL OR i.jurisdictions @> jsonb_build_array(jsonb_build_object('code', %(scope)s::text)))
            GROUP BY 1, 2, 3
            """,
            {"start": span.start, "end": span.end, "before": before.start,
             "interval": interval, "offset": ZONE.utcoffset(None), "scope": scope},
        ).fetchall()  # fmt: skip
    index = {b: k for k, b in enumerate(buckets)}
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = found.setdefault(row["code"], {"code": row["code"], "name": row["name"],
                                               "now": 0, "before": 0,
                                               "series": [0] * len(buckets)})  # fmt: skip
        if row["bucket"] is None:
            entry["before"] += row["n"]
        else:
            entry["now"] += row["n"]
            entry["series"][index[row["bucket"].isoformat()]] += row["n"]
    listed = [
        {"code": e["code"], "name": e["name"], **_change(e["now"], e["before"]),
         "series": e["series"]}
        for e in found.values()
    ]  # fmt: skip
    listed.sort(key=lambda e: (-e["count"], -e["change"], e["code"]))
    return {
        **span.as_dict(), "previous": before.as_dict(), "interval": interval,
        "buckets": buckets, **_change(sum(e["count"] for e in listed),
                                      sum(e["previous"] for e in listed)),
        "categories": listed,
    }  # fmt: skip


@functools.cache
def stop_words() -> frozenset[str]:
    """The stop words of ``data/stopwords.txt`` (read once)."""
    text = _DATA.joinpath("stopwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )  # fmt: skip


def _segmenter() -> Any:
    """jieba's tokenizer, loaded once, on first use (a second or so, and some 100 MB: a
    process that never asks for hot words never pays it)."""
    global _tokenizer
    if _tokenizer is None:
        with _lock:
            if _tokenizer is None:
                import jieba  # lazily: see the docstring

                jieba.setLogLevel(logging.WARNING)
                tokenizer = jieba.Tokenizer()
                tokenizer.initialize()
                # The words of city management jieba's dictionary splits (占道 is not
                # 占 + 道): a city adds its own to the file.
                with resources.as_file(_DATA.joinpath("userdict.txt")) as path:
                    tokenizer.load_userdict(str(path))
                _tokenizer = tokenizer
    return _tokenizer


@functools.lru_cache(maxsize=65_536)
def words_of(text: str) -> frozenset[str]:
    """The words of ``text`` worth counting (see ``_WORD``, less the stop words), each
    once; Latin words in lower case."""
    stop = stop_words()
    found = set()
    for token in _segmenter().lcut(text):
        word = token.strip().lower()
        if _WORD.fullmatch(word) and word not in stop:
            found.add(word)
    return frozenset(found)


def words(
    conn: psycopg.Connection,
    span: Period,
    *,
    limit: int = 50,
    min_reports: int = 3,
    scope: str | None = None,
) -> dict[str, Any]:
    """The hot words of the descriptions reported in ``span``: each word with ``count``
    (the reports that use it), ``previous`` and the change, the most used first; a word
    fewer than ``min_reports`` reports use (at least 2) is left out. ``sampled``: more
    than ``MAX_TEXTS`` different descriptions, the newest were read. One query."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_WORDS:
        raise InvalidInput(f"limit must be from 1 to {MAX_WORDS}", option="limit")
    if (isinstance(min_reports, bool) or not isinstance(min_reports, int)
            or not MIN_REPORTS_FLOOR <= min_reports <= 1_000_000):  # fmt: skip
        raise InvalidInput(f"min_reports must be a whole number from {MIN_REPORTS_FLOOR}: a "
                           "word one report alone holds may be a name", option="min_reports")  # fmt: skip
    before = span.previous
    rows = conn.execute(
        """
        SELECT i.description, count(*) FILTER (WHERE i.reported_at >= %(start)s),
            count(*) FILTER (WHERE i.reported_at < %(start)s)
        FROM incidents i
        WHERE i.reported_at >= %(before)s AND i.reported_at < %(end)s AND i.description <> ''
          AND (%(scope)s::text IS NULL OR i.jurisdictions @> jsonb_build_array(jsonb_build_object('code', %(scope)s::text)))
        GROUP BY i.description ORDER BY max(i.reported_at) DESC LIMIT %(texts)s
        """,
        {
            "start": span.start,
            "end": span.end,
            "before": before.start,
            "texts": MAX_TEXTS + 1,
            "scope": scope,
        },
    ).fetchall()
    sampled = len(rows) > MAX_TEXTS
    now: Counter[str] = Counter()
    then: Counter[str] = Counter()
    for description, current, earlier in rows[:MAX_TEXTS]:
        for word in words_of(description):
            now[word] += current
            then[word] += earlier
    hot = [{"word": w, **_change(n, then[w])} for w, n in now.items() if n >= min_reports]
    hot.sort(key=lambda e: (-e["count"], -e["change"], e["word"]))
    return {
        **span.as_dict(), "previous": before.as_dict(), "min_reports": min_reports,
        "sampled": sampled, "words": hot[:limit],
    }  # fmt: skip


def _limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be from 1 to {MAX_LIMIT}", option="limit")
    return limit


def hotspots(
    conn: psycopg.Connection,
    span: Period,
    *,
    level: str = "grid",
    limit: int = 50,
    scope: str | None = None,
) -> dict[str, Any]:
    """Reports per jurisdiction of ``level`` in ``span`` against the period before, the
    most reported first: each ``{code, name, count, previous, change, change_pct, lon,
    lat}`` (a point inside the jurisdiction, for the map). One query."""
    level = check_level(level)
    limit = _limit(limit)
    before = span.previous
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            WITH counted AS (
                SELECT j.place ->> 'code' AS code, min(j.place ->> 'name') AS named,
                    count(*) FILTER (WHERE i.reported_at >= %(start)s) AS now,
                    count(*) FILTER (WHERE i.reported_at < %(start)s) AS before
                FROM incidents i CROSS JOIN LATERAL jsonb_array_elements(i.jurisdictions)
                    AS j(place)
                WHERE i.reported_at >= %(before)s AND i.reported_at < %(end)s
                  AND j.place ->> 'level' = %(level)s AND (%(scope)s::text IS NULL OR i.jurisdictions @> jsonb_build_array(jsonb_build_object('code', %(scope)s::text)))
                GROUP BY 1
            )
            SELECT c.code, coalesce(w.name, c.named) AS name, c.now, c.before,
                ST_X(ST_PointOnSurface(w.geom)) AS lon, ST_Y(ST_PointOnSurface(w.geom)) AS lat
            FROM counted c LEFT JOIN jurisdictions w ON w.code = c.code
            ORDER BY c.now DESC, c.now - c.before DESC, c.code LIMIT %(limit)s
            """,
            {"start": span.start, "end": span.end, "before": before.start, "level": level,
             "limit": limit, "scope": scope},
        ).fetchall()  # fmt: skip
    return {
        **span.as_dict(), "previous": before.as_dict(), "level": level,
        "hotspots": [
            {"code": r["code"], "name": r["name"], **_change(r["now"], r["before"]),
             "lon": r["lon"], "lat": r["lat"]}
            for r in rows
        ],
    }  # fmt: skip


def clusters(
    conn: psycopg.Connection,
    span: Period,
    *,
    eps_m: float = 150.0,
    min_reports: int = 5,
    scope: str | None = None,
) -> dict[str, Any]:
    """Emerging clusters in ``span``: reports of one category each within ``eps_m``
    metres of another of the cluster, at least ``min_reports`` of them (DBSCAN's eps and
    minpoints), that are new or grew against the period before (see the module's
    docstring); the largest first, each with its centre, radius, first and last report
    and incident ids. One query."""
    if (
        isinstance(eps_m, bool)
        or not isinstance(eps_m, int | float)
        or not (EPS_M[0] <= eps_m <= EPS_M[1])
    ):
        raise InvalidInput(f"eps_m must be from {EPS_M[0]:g} to {EPS_M[1]:g} metres",
                           option="eps_m")  # fmt: skip
    if (
        isinstance(min_reports, bool)
        or not isinstance(min_reports, int)
        or not (3 <= min_reports <= 10_000)
    ):
        raise InvalidInput("min_reports must be a whole number from 3 to 10000",
                           option="min_reports")  # fmt: skip
    before = span.previous
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            WITH recent AS (
                SELECT i.id, i.category_code, i.reported_at, i.geom
                FROM incidents i WHERE i.reported_at >= %(start)s AND i.reported_at < %(end)s
                  AND (%(scope)s::text IS NULL OR i.jurisdictions @> jsonb_build_array(jsonb_build_object('code', %(scope)s::text)))
            ), zone AS (  -- the UTM zone of the reports' centre: metres for DBSCAN's eps
                SELECT CASE WHEN avg(ST_Y(geom)) >= 0 THEN 32600 ELSE 32700 END
                    + least(60, greatest(1, floor((avg(ST_X(geom)) + 180) / 6)::int + 1))
                    AS srid
                FROM recent
            ), clustered AS (
                SELECT r.*, ST_Transform(r.geom, z.srid) AS local, z.srid,
                    ST_ClusterDBSCAN(ST_Transform(r.geom, z.srid), eps => %(eps)s,
                        minpoints => %(min)s) OVER (PARTITION BY r.category_code) AS cluster
                FROM recent r CROSS JOIN zone z
            ), found AS (
                SELECT category_code, cluster, min(srid) AS srid, count(*) AS reports,
                    ST_Collect(local) AS members, ST_Centroid(ST_Collect(local)) AS centre,
                    min(reported_at) AS first_at, max(reported_at) AS last_at,
                    (array_agg(id ORDER BY id))[1:%(ids)s] AS incident_ids
                FROM clustered WHERE cluster IS NOT NULL
                GROUP BY category_code, cluster
            )
            SELECT f.category_code, c.name AS category_name, f.reports, f.first_at, f.last_at,
                f.incident_ids,
                ST_X(ST_Transform(f.centre, 4326)) AS lon, ST_Y(ST_Transform(f.centre, 4326))
                    AS lat,
                ST_MaxDistance(f.centre, f.members) AS radius_m,
                (SELECT count(*) FROM incidents p
                 WHERE p.category_code = f.category_code
                   AND p.reported_at >= %(before)s AND p.reported_at < %(start)s
                   AND (%(scope)s::text IS NULL OR p.jurisdictions @> jsonb_build_array(jsonb_build_object('code', %(scope)s::text)))
                   AND ST_DWithin(ST_Transform(p.geom, f.srid), f.members, %(eps)s))
                    AS previous
            FROM found f JOIN incident_categories c ON c.code = f.category_code
            """,
            {"start": span.start, "end": span.end, "before": before.start,
             "eps": float(eps_m), "min": min_reports, "ids": IDS_PER_CLUSTER, "scope": scope},
        ).fetchall()  # fmt: skip
    emerging = []
    for r in rows:
        status = "new" if r["previous"] < min_reports else "grew"
        if status == "grew" and r["reports"] <= r["previous"]:
            continue  # there before, and no larger: not emerging
        emerging.append({
            "category": {"code": r["category_code"], "name": r["category_name"]},
            "status": status, "reports": r["reports"], "previous": r["previous"],
            "lon": r["lon"], "lat": r["lat"], "radius_m": round(r["radius_m"], 1),
            "first_at": r["first_at"], "last_at": r["last_at"],
            "incident_ids": r["incident_ids"],
        })  # fmt: skip
    emerging.sort(key=lambda e: (-e["reports"], e["category"]["code"], e["first_at"]))
    return {
        **span.as_dict(), "previous": before.as_dict(), "eps_m": float(eps_m),
        "min_reports": min_reports, "clusters": emerging,
    }  # fmt: skip


def default_cluster_period(start: Any, end: Any, now: datetime | None = None) -> Period:
    """The period of ``clusters``: as ``evaluation.period``, the last ``CLUSTER_DAYS``
    days by default (emerging is recent)."""
    return period(start, end, now=now, default_days=CLUSTER_DAYS)
