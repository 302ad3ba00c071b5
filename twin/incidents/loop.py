"""The closed loop (闭环): an incident's states, the actions that move it between them, and
the SLA sweep that supervises (督办) and escalates overdue work.

    reported → dispatched → accepted → in_progress → resolved → closed (verified)

with send-back (退单: the unit hands it back to the dispatcher, its unit cleared),
reassign, reopen (a resolved or closed incident whose work did not hold), and three
endings: cancelled, duplicate (of another incident) and not_our_duty. ``not_our_duty`` is
an ending, as the issue lists it among them: the centre finds the matter is no public
body's duty at all (a private dispute, a matter for the courts), and the resident is told
so. A unit that finds it is not *its* duty sends the report back instead, and the
dispatcher dispatches it anew; the two are kept apart so the figures can tell a wrong
dispatch from a report no one should take.

Every transition runs in one transaction against the version the caller read: the row is
locked, a stale version is refused (``StaleVersion``, so of two concurrent updates one
wins), the version bumps, the timeline gets the step (who, when, from, to, note) and the
incidents layer's change log a change. No HTTP here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from twin import changes, keys
from twin.errors import Conflict, Forbidden, InvalidInput
from twin.incidents import dispatch, intake
from twin.incidents.intake import LAYER, MAX_NOTE

ACTIVE = ("reported", "dispatched", "accepted", "in_progress")
# The one table of the loop: action → (the states it may be taken from, the state it
# leads to, the timeline's word for it). Reopen leads to in_progress unless ``to`` says
# dispatched (the unit must accept it again).
TRANSITIONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "dispatch": (("reported",), "dispatched", "dispatched"),
    "reassign": (("dispatched", "accepted", "in_progress"), "dispatched", "reassigned"),
    "accept": (("dispatched",), "accepted", "accepted"),
    "start": (("accepted",), "in_progress", "started"),
    "resolve": (("in_progress",), "resolved", "resolved"),
    "close": (("resolved",), "closed", "closed"),
    "send_back": (("dispatched", "accepted"), "reported", "sent_back"),
    "reopen": (("resolved", "closed"), "in_progress", "reopened"),
    "cancel": (ACTIVE, "cancelled", "cancelled"),
    "duplicate": (ACTIVE, "duplicate", "marked_duplicate"),
    "not_our_duty": (("reported", "dispatched", "accepted"), "not_our_duty", "not_our_duty"),
}
ACTIONS = tuple(TRANSITIONS)
# Who may take each action (twin/keys.py's roles); the key's scope limits where. The unit
# does the work and may hand it back; the grid inspector verifies it on the spot (核查);
# the dispatcher and the supervisor may do everything.
_CENTRE = frozenset({"dispatcher", "supervisor", "admin"})
_UNIT = _CENTRE | {"unit_staff"}
_VERIFY = _CENTRE | {"grid_inspector"}
ACTION_ROLES: dict[str, frozenset[str]] = {
    "dispatch": _CENTRE, "reassign": _CENTRE, "accept": _UNIT, "start": _UNIT,
    "resolve": _UNIT, "close": _VERIFY, "send_back": _UNIT, "reopen": _VERIFY,
    "cancel": _CENTRE, "duplicate": _CENTRE, "not_our_duty": _CENTRE,
}  # fmt: skip
# A person must say why: the dispatcher, the resident and the figures read it.
NOTE_REQUIRED = frozenset({"send_back", "reopen", "cancel", "not_our_duty"})
# What each action takes beyond the note; anything else is refused by name.
EXTRA = {"dispatch": ("unit",), "reassign": ("unit",), "duplicate": ("duplicate_of",),
         "reopen": ("to",)}  # fmt: skip
REOPEN_TO = ("in_progress", "dispatched")
MOVABLE = frozenset({"unit_code", "escalated", "dispatch", "duplicate_of", "due_response_at",
                     "due_resolve_at"})  # besides status  # fmt: skip
SWEEP_ACTOR = "sla-sweep"
SWEEP_LOCK = 0x7477696E_73776570  # an advisory lock's key: "twinswep"
# The marks of the two clocks on the timeline: a clock is supervised once.
CLOCKS = {"response": "response overdue", "resolve": "resolution overdue"}


def allowed_from(status: str) -> list[str]:
    """The actions that may be taken from ``status`` (none from an ending)."""
    return [action for action, (sources, _, _) in TRANSITIONS.items() if status in sources]


def _shown(value: Any) -> str:
    return repr(str(value).replace("\x00", "")[:40])


def _check_action(action: Any) -> str:
    if not isinstance(action, str) or action not in TRANSITIONS:
        raise InvalidInput(f"action {_shown(action)} is not one of {', '.join(ACTIONS)}",
                           option="action")  # fmt: skip
    return action


def _check_extra(action: str, extra: dict[str, Any]) -> dict[str, Any]:
    takes = EXTRA.get(action, ())
    unknown = [k for k in extra if k not in takes]
    if unknown:
        what = f"it takes {', '.join(takes)}" if takes else "it takes only a note"
        raise InvalidInput(f"{unknown[0]!r} does not go with {action}: {what}",
                           option=unknown[0])  # fmt: skip
    return extra


def transition(
    conn: psycopg.Connection,
    incident_id: int,
    action: str,
    *,
    actor: str,
    note: str | None = None,
    expected_version: int,
    holder: keys.Holder | None = None,
    at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Take ``action`` (one of ``ACTIONS``) on the incident, against the version the
    caller read; the incident as staff see it after (``intake.get``).

    ``extra``: ``unit`` for dispatch and reassign, ``duplicate_of`` (an incident id) for
    duplicate, ``to`` (in_progress or dispatched) for reopen. Conflict when the action is
    not allowed from the current status (the message names the status and what is
    allowed from it), StaleVersion when the incident changed since that version,
    InvalidInput for an unknown action, a missing or wrong value (``option`` names it),
    NotFound for an unknown incident or one outside ``holder``'s scope, Forbidden when
    ``holder``'s role may not take the action (``ACTION_ROLES``). ``at``: when it was done,
    for a history replayed (the demo's); the API never gives it, so the timeline says now."""
    intake._check_id(incident_id)
    action = _check_action(action)
    expected_version = intake.check_version(expected_version)
    note = intake._text("note", note, MAX_NOTE)
    extra = _check_extra(action, extra)
    if action in NOTE_REQUIRED and not note.strip():
        raise InvalidInput(f"{action.replace('_', ' ')} needs a note: say why", option="note")
    sources, target, word = TRANSITIONS[action]
    with conn.transaction():
        status, unit_code, lon, lat = intake.lock_current(conn, incident_id, expected_version)
        intake.check_scope(conn, incident_id, holder)  # before the role: outside, not there
        if holder is not None and holder.role not in ACTION_ROLES[action]:
            roles = ", ".join(sorted(r.replace("_", " ") for r in ACTION_ROLES[action]))
            raise Forbidden(f"{holder.a_role} may not {action.replace('_', ' ')}"
                            f" an incident ({roles} may)")  # fmt: skip
        if status not in sources:
            allowed = allowed_from(status)
            then = (
                f"from {status} you may {', '.join(allowed)}" if allowed
                else f"{status} is an ending: nothing more is done to it"
            )  # fmt: skip
            raise Conflict(f"incident {incident_id} is {status}: it cannot {action} ({then})")
        if action in ("dispatch", "reassign"):
            # One way to give a unit work: the dispatcher's own, which keeps the reason.
            if "unit" not in extra:
                raise InvalidInput(f"{action} needs a unit: the code of the unit", option="unit")
            return intake.dispatch_manually(
                conn, incident_id, extra["unit"], actor=actor, note=note,
                expected_version=expected_version, holder=holder, at=at,
            )  # fmt: skip
        sets: dict[str, Any] = {}
        if action == "reopen":
            target = extra.get("to", "in_progress")
            if not isinstance(target, str) or target not in REOPEN_TO:
                raise InvalidInput(f"to {_shown(target)}: a reopened incident goes to "
                                   f"{' or '.join(REOPEN_TO)}", option="to")  # fmt: skip
            sets = _clocks_anew(conn, incident_id, target, at)
        elif action == "send_back":
            sets = {"unit_code": None, "escalated": False, "dispatch": Jsonb({
                "rule": None, "how": "none",
                "reason": f"sent back by {actor} ({unit_code}): {note}",
            })}  # fmt: skip
        elif action == "duplicate":
            sets = {"duplicate_of": _original(conn, incident_id, extra.get("duplicate_of"))}
        _move(conn, incident_id, target, sets, at)
        intake._event(conn, incident_id, actor, word, status, target, note, at=at)
        # Nothing moved and the count holds: the layer's version moves, no recount.
        changes.record(conn, LAYER, "edit", box=(lon, lat, lon, lat), features=1, table=None)
        return intake.get(conn, incident_id)


def _clocks_anew(conn: psycopg.Connection, incident_id: int, target: str,
                 at: datetime | None) -> dict[str, Any]:  # fmt: skip
    """The due times of reopened work (重办): the category's resolution time again from
    now, and its response time too when the unit must accept it anew (``dispatched``)."""
    row = conn.execute(
        "SELECT c.response_hours, c.resolve_hours FROM incidents i"
        " JOIN incident_categories c ON c.code = i.category_code WHERE i.id = %s",
        (incident_id,),
    ).fetchone()
    assert row is not None  # locked by the caller; a category cannot go while it is used
    start = at or datetime.now(UTC)
    sets = {"due_resolve_at": start + timedelta(hours=row[1])}
    if target == "dispatched":
        sets["due_response_at"] = start + timedelta(hours=row[0])
    return sets


def _move(conn: psycopg.Connection, incident_id: int, status: str, sets: dict[str, Any],
          at: datetime | None = None) -> None:  # fmt: skip
    """Set the status (and ``sets``, columns of this module's own choosing), bump the
    version; updated at ``at`` (default now)."""
    assigned = [
        sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(column))
        for column in sets
        if column in MOVABLE
    ]
    conn.execute(
        sql.SQL(
            "UPDATE incidents SET status = %(status)s, version = version + 1,"
            " updated_at = COALESCE(%(at)s, now()){} WHERE id = %(id)s"
        ).format(sql.SQL("").join(sql.SQL(", ") + a for a in assigned)),
        {"status": status, "id": incident_id, "at": at, **sets},
    )


def _original(conn: psycopg.Connection, incident_id: int, original: Any) -> int:
    """The incident a duplicate is one of: stored, not itself, not itself a duplicate."""
    if original is None:
        raise InvalidInput("duplicate needs duplicate_of: the id of the incident it repeats",
                           option="duplicate_of")  # fmt: skip
    if isinstance(original, bool) or not isinstance(original, int) or not 0 < original < 2**63:
        raise InvalidInput("duplicate_of must be an incident id", option="duplicate_of")
    if original == incident_id:
        raise InvalidInput("an incident cannot be a duplicate of itself", option="duplicate_of")
    row = conn.execute(
        "SELECT status, duplicate_of FROM incidents WHERE id = %s", (original,)
    ).fetchone()
    if row is None:
        raise InvalidInput(f"duplicate_of: there is no incident {original}", option="duplicate_of")
    if row[0] == "duplicate":
        raise InvalidInput(f"incident {original} is itself a duplicate of {row[1]}: link to "
                           f"{row[1]}", option="duplicate_of")  # fmt: skip
    return original


def overdue(conn: psycopg.Connection, now: datetime | None = None) -> list[dict[str, Any]]:
    """The open incidents past a due time at ``now`` (default: now), the longest overdue
    first: each ``{id, status, unit, category, jurisdictions, due_at, overdue}`` where
    ``overdue`` names the clocks run out (``response``: no unit accepted it in time;
    ``resolve``: not resolved in time)."""
    now = _now(now)
    return [
        {
            "id": r["id"], "status": r["status"], "unit": r["unit_code"],
            "category": r["category_code"], "jurisdictions": r["jurisdictions"],
            "due_at": {"response": r["due_response_at"], "resolve": r["due_resolve_at"]},
            "overdue": _clocks(r, now),
        }
        for r in _overdue_rows(conn, now)
    ]  # fmt: skip


def _overdue_rows(conn: psycopg.Connection, now: datetime) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        query = sql.SQL(
            "SELECT i.id, i.status, i.unit_code, i.category_code, i.jurisdictions,"
            " i.due_response_at, i.due_resolve_at FROM incidents i WHERE {}"
            " ORDER BY least(CASE WHEN i.status = ANY(%(awaiting)s)"
            " THEN i.due_response_at END, i.due_resolve_at), i.id"
        ).format(intake.OVERDUE_WHERE)
        return cur.execute(query, intake.overdue_params(now)).fetchall()


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise InvalidInput("now needs its time zone", option="now")
    return now


def _clocks(row: dict[str, Any], now: datetime) -> list[str]:
    run_out = []
    if row["status"] in intake.AWAITING_RESPONSE and row["due_response_at"] < now:
        run_out.append("response")
    if row["status"] in intake.OPEN and row["due_resolve_at"] < now:
        run_out.append("resolve")
    return run_out


def sweep(conn: psycopg.Connection, now: datetime | None = None) -> list[dict[str, Any]]:
    """Supervise (督办) the work newly overdue at ``now``: each clock run out is marked on
    the incident's timeline once (action ``supervised``) and the incident escalated to the
    centre of its nearest enclosing jurisdiction that has one (``dispatch``'s escalation):
    work no unit has yet goes to that centre; work a unit has stays with it, flagged
    ``escalated``, the centre named on the timeline. Run again, it marks nothing twice.
    What it did: ``[{id, clocks, centre}]``. One sweep at a time: every API process runs
    it, and a sweep that finds another under way leaves the work to it. A ``now`` given (a
    history replayed) is also the time of its timeline's marks."""
    at = now
    now = _now(now)
    done: list[dict[str, Any]] = []
    with conn.transaction():
        if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (SWEEP_LOCK,)).fetchone()[0]:  # type: ignore[index]
            return done
        found = {r["id"]: r for r in _overdue_rows(conn, now)}
        if not found:
            return done
        with conn.cursor(row_factory=dict_row) as cur:
            # SKIP LOCKED: an incident a person is changing right now waits for the next
            # sweep rather than holding this one up (or failing it on a stale version).
            locked = cur.execute(
                "SELECT id, status, unit_code, jurisdictions, ST_X(geom) AS lon,"
                " ST_Y(geom) AS lat FROM incidents WHERE id = ANY(%s) ORDER BY id"
                " FOR UPDATE SKIP LOCKED",
                (list(found),),
            ).fetchall()
            # Marks since the last reopen: reopened work has its clocks anew.
            marked = cur.execute(
                "SELECT e.incident_id, e.note FROM incident_events e WHERE e.action ="
                " 'supervised' AND e.incident_id = ANY(%s) AND e.id > coalesce((SELECT"
                " max(r.id) FROM incident_events r WHERE r.incident_id = e.incident_id AND"
                " r.action = 'reopened'), 0)",
                (list(found),),
            ).fetchall()
        seen = {(m["incident_id"], clock) for m in marked for clock, mark in CLOCKS.items()
                if mark in m["note"]}  # fmt: skip
        for row in locked:
            current = _clocks({**found[row["id"]], "status": row["status"]}, now)
            clocks = [c for c in current if (row["id"], c) not in seen]
            if clocks:
                done.append(_supervise(conn, row, clocks, found[row["id"]], at))
        if done:
            lons = [r["lon"] for r in locked if any(d["id"] == r["id"] for d in done)]
            lats = [r["lat"] for r in locked if any(d["id"] == r["id"] for d in done)]
            changes.record(conn, LAYER, "edit", box=(min(lons), min(lats), max(lons),
                           max(lats)), features=len(done), table=None)  # fmt: skip
    return done


def _supervise(conn: psycopg.Connection, row: dict[str, Any], clocks: list[str],
               due: dict[str, Any], at: datetime | None) -> dict[str, Any]:  # fmt: skip
    centre = dispatch.centre(conn, row["jurisdictions"])
    words = "; ".join(f"{CLOCKS[c]}: due {due[f'due_{c}_at']:%Y-%m-%d %H:%M %Z}" for c in clocks)
    status, sets = row["status"], {"escalated": True}
    if centre is None:
        words += " (督办); no centre encloses it: a supervisor must take it up"
    elif row["unit_code"] is None:
        # Waiting for a dispatcher past its time: the centre takes it (街道吹哨).
        status = "dispatched"
        sets.update(unit_code=centre[0], dispatch=Jsonb({
            "rule": None, "how": "escalation",
            "reason": f"overdue and undispatched: escalated to {centre[1]} by the SLA sweep",
        }))  # fmt: skip
        words += f" (督办): escalated to {centre[1]}"
    else:
        words += f" (督办): escalated to {centre[1]}, which supervises {row['unit_code']}"
    _move(conn, row["id"], status, sets, at)
    intake._event(conn, row["id"], SWEEP_ACTOR, "supervised", row["status"], status, words,
                  at=at)  # fmt: skip
    return {"id": row["id"], "clocks": clocks, "centre": centre[0] if centre else None}
