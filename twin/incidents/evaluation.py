"""Evaluation (一网评效): how each unit and each jurisdiction handled the incidents
reported in a period, computed in one SQL query per answer from the incidents and their
timeline (``incident_events``). No HTTP here.

What is counted, for the incidents reported in ``[start, end)`` (reports fused into
another at intake are not work orders and are left out; every other ending is in):

- ``received``: a unit's, the incidents it has now (answerable for them); a
  jurisdiction's, every work order reported in it.
- ``dispatched_auto``: sent at intake by the responsibility list (``auto_by_rule``,
  ``auto_by_owner``) or escalated to a centre (``auto_by_escalation``); a unit's are the
  automatic dispatches it was sent. ``dispatched_manual``: those whose unit a dispatcher
  chose by hand (a first dispatch or a reassignment). ``reassigned``: automatic
  dispatches later reassigned or sent back (退单); ``dispatch_accuracy`` = 1 − reassigned
  / dispatched_auto (研判准确率).
- ``on_time_rate`` = resolved_on_time / resolve_due: resolved (first resolution) by the
  due time, of those resolved or still open past it now (work still within its time is
  not judged yet). ``response_on_time_rate`` likewise for acceptance by the response due
  time.
- ``median_accept_hours``: report to first acceptance (the response clock's start);
  ``median_close_hours``: report to the last close, of those closed now.
- ``reopen_rate`` = reopened / resolved; ``overdue_now``: open past a due time now;
  ``supervised``: marked by the SLA sweep (督办).
- ``rank``: by ``on_time_rate``, then ``response_on_time_rate``, then ``reopen_rate``
  (lower first); equal keys share a rank (1, 1, 3); those with nothing due yet get none.
  A lexicographic key, not a weighted score: every step of it is a figure in the same
  row, so a unit can see why it stands where it does, and weights would be a policy the
  centre has not set. Dispatch accuracy is left out of a unit's rank: it judges the
  dispatch, not the unit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from twin.errors import InvalidInput
from twin.incidents import intake
from twin.schema import JURISDICTION_LEVELS

# A date without a time is a day in China Standard Time (UTC+8, no daylight saving since
# 1991): the day the centres' reports count in.
ZONE = timezone(timedelta(hours=8))
DEFAULT_DAYS = 30
MAX_DAYS = 3660  # ten years: enough for any comparison, and the calendar stays in range
EARLIEST_YEAR = intake.EARLIEST_REPORT_YEAR
# Intake's own name on the automatic dispatch's event (twin.incidents.intake.report).
AUTO_ACTOR = "dispatch"
# Rates come out rounded to this many places, hours to two: the counts beside them exact.
RATE_PLACES = 4
HOURS_PLACES = 2

RANKING = (
    "on_time_rate (higher first), then response_on_time_rate (higher first), then "
    "reopen_rate (lower first); equal keys share a rank"
)
FIGURES = (
    "received", "dispatched_auto", "auto_by_rule", "auto_by_owner", "auto_by_escalation",
    "dispatched_manual", "reassigned", "dispatch_accuracy", "resolve_due", "resolved_on_time",
    "on_time_rate", "response_due", "responded_on_time", "response_on_time_rate",
    "median_accept_hours", "median_close_hours", "resolved", "reopened", "reopen_rate",
    "overdue_now", "supervised",
)  # fmt: skip
UNIT_COLUMNS = ("rank", "unit", "name", "kind", *FIGURES)
JURISDICTION_COLUMNS = ("rank", "code", "name", "level", *FIGURES)
_RATES = {"dispatch_accuracy", "on_time_rate", "response_on_time_rate", "reopen_rate"}
_HOURS = {"median_accept_hours", "median_close_hours"}


@dataclass(frozen=True)
class Period:
    """A half-open period ``[start, end)`` of report times, both with a time zone."""

    start: datetime
    end: datetime

    @property
    def previous(self) -> Period:
        """The period of the same length just before (for changes against it)."""
        return Period(self.start - (self.end - self.start), self.start)

    def as_dict(self) -> dict[str, str]:
        """``{from, to}`` as RFC 3339 text."""
        return {"from": self.start.isoformat(), "to": self.end.isoformat()}


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _moment(name: str, value: Any, *, end: bool) -> datetime | None:
    """A bound as given: a date-time with its time zone, or a date (the whole day, in
    ``ZONE``: as ``to``, up to the end of that day)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value + timedelta(days=end), time(), ZONE)
    elif isinstance(value, str):
        if "\x00" in value or len(value) > 64:
            raise InvalidInput(f"{name} is not a date or date-time", option=name)
        text = value.strip()
        try:
            if _DATE.fullmatch(text):
                day = date.fromisoformat(text)
                moment = datetime.combine(day + timedelta(days=end), time(), ZONE)
            else:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except (ValueError, OverflowError):
            raise InvalidInput(
                f"{name} {text[:40]!r} is not a date (2026-11-01) or a date-time with its time "
                "zone (2026-11-01T08:00:00+08:00)", option=name,
            ) from None  # fmt: skip
    else:
        raise InvalidInput(f"{name} must be a date or date-time", option=name)
    if moment.tzinfo is None:
        raise InvalidInput(f"{name} needs its time zone (e.g. +08:00 or Z), or give a date",
                           option=name)  # fmt: skip
    if not EARLIEST_YEAR <= moment.year <= 9000:
        raise InvalidInput(f"{name} {moment.date().isoformat()} is before {EARLIEST_YEAR} or "
                           "beyond any report", option=name)  # fmt: skip
    return moment


def period(
    start: Any = None,
    end: Any = None,
    *,
    now: datetime | None = None,
    default_days: int = DEFAULT_DAYS,
) -> Period:
    """The period ``[start, end)`` from what a person gave (text, a date or a date-time;
    see ``_moment``): ``end`` defaults to now, ``start`` to ``default_days`` before the end.
    InvalidInput naming ``from`` or ``to`` when one is unreadable, ``from`` when it is not
    before ``to`` or the period is longer than ``MAX_DAYS``."""
    now = now or datetime.now(UTC)
    last = _moment("to", end, end=True) or now
    first = _moment("from", start, end=False) or last - timedelta(days=default_days)
    if first >= last:
        raise InvalidInput(f"from {first.isoformat()} is not before to {last.isoformat()}",
                           option="from")  # fmt: skip
    if last - first > timedelta(days=MAX_DAYS):
        raise InvalidInput(f"the period from {first.date()} to {last.date()} is longer than "
                           f"{MAX_DAYS // 366} years: ask for a shorter one", option="from")  # fmt: skip
    return Period(first, last)


def check_level(level: Any) -> str:
    """A jurisdiction level, or InvalidInput (option ``level``) listing the levels."""
    if not isinstance(level, str) or level not in JURISDICTION_LEVELS:
        shown = str(level).replace("\x00", "")[:40]
        raise InvalidInput(f"level {shown!r} is not one of {', '.join(JURISDICTION_LEVELS)}",
                           option="level")  # fmt: skip
    return level


# One row per work order reported in the period, with what its timeline says of it. The
# automatic dispatch's kind and unit: the incident's own when it was never redirected;
# else read back from intake's reason ("rule #12: …", the owner named "(owner X of …)") or,
# for an escalation, the centre intake's rule picks (twin.incidents.dispatch.centre).
_FACTS = """
WITH base AS (
    SELECT i.id, i.unit_code, i.status, i.reported_at, i.due_response_at, i.due_resolve_at,
           i.dispatch ->> 'how' AS how_now, i.jurisdictions
    FROM incidents i
    WHERE i.reported_at >= %(start)s AND i.reported_at < %(end)s
      AND i.dispatch ->> 'how' IS DISTINCT FROM 'fused'
      AND (%(scope)s::text IS NULL
           OR i.jurisdictions @> jsonb_build_array(jsonb_build_object('code', %(scope)s::text)))
), steps AS (
    SELECT e.incident_id,
        bool_or(e.actor = %(auto)s AND e.action IN ('dispatched', 'escalated')) AS auto,
        bool_or(e.actor = %(auto)s AND e.action = 'escalated') AS auto_escalated,
        max(e.note) FILTER (WHERE e.actor = %(auto)s AND e.action = 'dispatched') AS auto_note,
        bool_or(e.action IN ('reassigned', 'sent_back')) AS redirected,
        min(e.at) FILTER (WHERE e.action = 'accepted') AS accepted_at,
        min(e.at) FILTER (WHERE e.action = 'resolved') AS resolved_at,
        max(e.at) FILTER (WHERE e.action = 'closed') AS closed_at,
        bool_or(e.action = 'reopened') AS reopened,
        bool_or(e.action = 'supervised') AS supervised
    FROM incident_events e JOIN base b ON b.id = e.incident_id
    GROUP BY e.incident_id
), facts AS (
    SELECT b.*, s.auto, s.redirected, s.accepted_at, s.resolved_at, s.closed_at,
        s.reopened, s.supervised,
        CASE WHEN NOT s.auto THEN NULL
             WHEN s.auto_escalated THEN 'escalation'
             WHEN NOT s.redirected THEN b.how_now
             WHEN s.auto_note LIKE '%% (owner %% of %%' THEN 'owner'
             ELSE 'rule' END AS auto_how,
        CASE WHEN NOT s.auto THEN NULL
             WHEN NOT s.redirected THEN b.unit_code
             WHEN s.auto_escalated THEN (
                 SELECT u.code FROM jsonb_array_elements(b.jurisdictions)
                     WITH ORDINALITY AS j(place, n)
                 JOIN units u ON u.kind = 'centre' AND u.jurisdiction_code = j.place ->> 'code'
                 ORDER BY j.n DESC, u.code LIMIT 1)
             ELSE (SELECT r.unit_code FROM responsibility_rules r
                   WHERE r.id = substring(s.auto_note FROM '^rule #([0-9]+):')::bigint)
        END AS auto_unit
    FROM base b JOIN steps s ON s.incident_id = b.id
)
"""

# The figures of a group of facts ``i``; ``held`` says which rows the group is answerable
# for, ``sent`` which rows it was sent automatically (a unit's two roles; a
# jurisdiction's rows are both).
_FIGURES = """
    count(*) FILTER (WHERE {held}) AS received,
    count(*) FILTER (WHERE {sent}) AS dispatched_auto,
    count(*) FILTER (WHERE {sent} AND i.auto_how = 'rule') AS auto_by_rule,
    count(*) FILTER (WHERE {sent} AND i.auto_how = 'owner') AS auto_by_owner,
    count(*) FILTER (WHERE {sent} AND i.auto_how = 'escalation') AS auto_by_escalation,
    count(*) FILTER (WHERE {held} AND i.how_now = 'manual') AS dispatched_manual,
    count(*) FILTER (WHERE {sent} AND i.redirected) AS reassigned,
    count(*) FILTER (WHERE {held} AND (i.resolved_at IS NOT NULL
        OR (i.status = ANY(%(open)s) AND i.due_resolve_at < %(now)s))) AS resolve_due,
    count(*) FILTER (WHERE {held} AND i.resolved_at <= i.due_resolve_at) AS resolved_on_time,
    count(*) FILTER (WHERE {held} AND (i.accepted_at IS NOT NULL
        OR (i.status = ANY(%(awaiting)s) AND i.due_response_at < %(now)s))) AS response_due,
    count(*) FILTER (WHERE {held} AND i.accepted_at <= i.due_response_at) AS responded_on_time,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM i.accepted_at
        - i.reported_at) / 3600) FILTER (WHERE {held}) AS median_accept_hours,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM i.closed_at
        - i.reported_at) / 3600) FILTER (WHERE {held} AND i.status = 'closed')
        AS median_close_hours,
    count(*) FILTER (WHERE {held} AND i.resolved_at IS NOT NULL) AS resolved,
    count(*) FILTER (WHERE {held} AND i.resolved_at IS NOT NULL AND i.reopened) AS reopened,
    count(*) FILTER (WHERE {held} AND {overdue}) AS overdue_now,
    count(*) FILTER (WHERE {held} AND i.supervised) AS supervised
"""

# The rates and the rank over the groups of ``figures``; ``key`` orders ties.
_RANKED = """
, rated AS (
    SELECT f.*,
        f.resolved_on_time::float8 / nullif(f.resolve_due, 0) AS on_time_rate,
        f.responded_on_time::float8 / nullif(f.response_due, 0) AS response_on_time_rate,
        f.reopened::float8 / nullif(f.resolved, 0) AS reopen_rate,
        1 - f.reassigned::float8 / nullif(f.dispatched_auto, 0) AS dispatch_accuracy
    FROM figures f
)
SELECT r.*, CASE WHEN r.on_time_rate IS NOT NULL THEN rank() OVER (ORDER BY
        r.on_time_rate DESC NULLS LAST, r.response_on_time_rate DESC NULLS LAST,
        r.reopen_rate ASC NULLS LAST) END AS rank
FROM rated r
ORDER BY rank NULLS LAST, r.received DESC, {key}
"""

# A unit's two roles: the work it has now (held), the automatic dispatches it was sent.
_UNITS = """
, roles AS (
    SELECT f.*, f.unit_code AS unit, 'held' AS role FROM facts f WHERE f.unit_code IS NOT NULL
    UNION ALL
    SELECT f.*, f.auto_unit, 'sent' FROM facts f WHERE f.auto_unit IS NOT NULL
), figures AS (
    SELECT i.unit, u.name, u.kind, {figures}
    FROM roles i JOIN units u ON u.code = i.unit
    GROUP BY i.unit, u.name, u.kind
)"""
# A jurisdiction's rows are every work order whose chain holds it at ``level``.
_JURISDICTIONS = """
, figures AS (
    SELECT j.place ->> 'code' AS code,
        coalesce(min(w.name), min(j.place ->> 'name')) AS name, %(level)s::text AS level, {figures}
    FROM facts i
    CROSS JOIN LATERAL jsonb_array_elements(i.jurisdictions) AS j(place)
    LEFT JOIN jurisdictions w ON w.code = j.place ->> 'code'
    WHERE j.place ->> 'level' = %(level)s AND (%(within)s::text IS NULL
        OR i.jurisdictions @> jsonb_build_array(jsonb_build_object('code', %(within)s::text)))
    GROUP BY j.place ->> 'code'
)"""


def _params(span: Period, now: datetime, scope: str | None) -> dict[str, Any]:
    return {"start": span.start, "end": span.end, "auto": AUTO_ACTOR, "scope": scope,
            **intake.overdue_params(now)}  # fmt: skip


def _shaped(row: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in columns:
        value = row[column]
        if value is not None and column in _RATES:
            value = round(float(value), RATE_PLACES)
        elif value is not None and column in _HOURS:
            value = round(float(value), HOURS_PLACES)
        out[column] = value
    return out


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise InvalidInput("now needs its time zone", option="now")
    return now


def units(
    conn: psycopg.Connection,
    span: Period,
    *,
    now: datetime | None = None,
    scope: str | None = None,
) -> list[dict[str, Any]]:
    """Each unit with work reported in ``span`` (it has it now, or was sent it
    automatically), ranked: ``UNIT_COLUMNS`` (see the module's docstring). One query.
    ``scope``: only the work reported inside that jurisdiction (an evaluator's key's)."""
    now = _now(now)
    overdue = intake.OVERDUE_WHERE
    figures = sql.SQL(_FIGURES).format(
        held=sql.SQL("i.role = 'held'"), sent=sql.SQL("i.role = 'sent'"), overdue=overdue
    )
    query = sql.Composed([
        sql.SQL(_FACTS), sql.SQL(_UNITS).format(figures=figures),
        sql.SQL(_RANKED).format(key=sql.SQL("r.unit")),
    ])  # fmt: skip
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, _params(span, now, scope)).fetchall()
    return [_shaped(r, UNIT_COLUMNS) for r in rows]


def jurisdictions(
    conn: psycopg.Connection,
    span: Period,
    *,
    level: str,
    within: str | None = None,
    now: datetime | None = None,
    scope: str | None = None,
) -> list[dict[str, Any]]:
    """Each jurisdiction of ``level`` with work orders reported in it in ``span`` (by the
    chain the incident was attached to at intake), ranked among them:
    ``JURISDICTION_COLUMNS``. ``within``: only those inside that jurisdiction (e.g. the
    streets of one district); ``scope``: only the work reported inside that one (an
    evaluator's key's). One query."""
    now = _now(now)
    level = check_level(level)
    if within is not None:
        within = intake._text("within", within, 100)
    figures = sql.SQL(_FIGURES).format(
        held=sql.SQL("TRUE"), sent=sql.SQL("i.auto"), overdue=intake.OVERDUE_WHERE
    )
    query = sql.Composed([
        sql.SQL(_FACTS), sql.SQL(_JURISDICTIONS).format(figures=figures),
        sql.SQL(_RANKED).format(key=sql.SQL("r.code")),
    ])  # fmt: skip
    params = {**_params(span, now, scope), "level": level, "within": within}
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
    return [_shaped(r, JURISDICTION_COLUMNS) for r in rows]
