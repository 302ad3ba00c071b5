"""Intake (综合受理): a report from any channel becomes an incident in one transaction,
attached to where it is (the jurisdiction chain) and what it concerns (the nearest assets
of its category's layers), dispatched by the responsibility list (``dispatch.choose``),
with its SLA's due times, the first events of its timeline and a tracking token.

Reads: ``get`` (staff: with the reporter's contacts), ``public`` (by tracking token, no
personal data), ``list_incidents``. ``dispatch_manually``: a dispatcher's (re)assignment,
against the version the dispatcher saw. The closed loop's other transitions are
``twin.incidents.loop``'s; they append to the same timeline and bump the same version.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from twin import changes, keys, spatial
from twin.crs import point_to_storage
from twin.errors import Conflict, InvalidInput, NotFound, StaleVersion, TwinError
from twin.incidents import categories, dispatch, fusion, photos, responsibilities
from twin.schema import INCIDENT_CHANNELS, INCIDENT_STATUSES, SRID

LAYER = "incidents"
TABLE = "incidents"
MAX_DESCRIPTION = 4000  # characters: a hotline operator's notes, not a document
MAX_ADDRESS = 500
MAX_REPORTER_FIELD = 200
MAX_KEY = 200
MAX_NOTE = 2000
ASSETS_PER_LAYER = 3
MAX_PAGE = 1000
REPORTER_FIELDS = ("name", "phone", "email")
FUTURE_SLACK = timedelta(minutes=5)  # a device's clock a little ahead is not a mistake
# States a dispatcher may no longer (re)assign from: the work is over.
FINISHED = frozenset({"resolved", "closed", "cancelled", "duplicate", "not_our_duty"})
# The SLA clocks (twin.incidents.loop sweeps them): the response clock runs until a unit
# accepts, the resolution clock until the work is resolved.
AWAITING_RESPONSE = ("reported", "dispatched")
OPEN = ("reported", "dispatched", "accepted", "in_progress")
OVERDUE_WHERE = sql.SQL(
    "((i.status = ANY(%(awaiting)s) AND i.due_response_at < %(now)s)"
    " OR (i.status = ANY(%(open)s) AND i.due_resolve_at < %(now)s))"
)


def overdue_params(now: datetime) -> dict[str, Any]:
    """The parameters of ``OVERDUE_WHERE`` at ``now``."""
    return {"awaiting": list(AWAITING_RESPONSE), "open": list(OPEN), "now": now}


# The earliest due time ahead of ``now`` among the incidents in a box: when one of them
# next turns overdue (the clocks of OVERDUE_WHERE).
NEXT_OVERDUE = sql.SQL("""
    SELECT min(due)
    FROM {table} AS i, LATERAL (VALUES
        (CASE WHEN i.status = ANY(%(awaiting)s) THEN i.due_response_at END),
        (CASE WHEN i.status = ANY(%(open)s) THEN i.due_resolve_at END)) AS d(due)
    WHERE i.geom && ST_MakeEnvelope(%(w)s, %(s)s, %(e)s, %(n)s, 4326) AND d.due > %(now)s
""").format(table=sql.Identifier(TABLE))


def next_overdue_at(
    conn: psycopg.Connection, box: tuple[float, float, float, float], now: datetime
) -> datetime | None:
    """When the first incident in ``box`` (west, south, east, north, degrees) to fall
    overdue after ``now`` does so; None when none will (what a map of them waits for)."""
    w, s, e, n = box
    row = conn.execute(
        NEXT_OVERDUE, {**overdue_params(now), "w": w, "s": s, "e": e, "n": n}
    ).fetchone()
    return None if row is None else row[0]


@dataclass(frozen=True)
class Incident:
    """What intake answers: the incident's id, its staff view, and whether this was a
    retry of a report already taken (the same idempotency key and payload)."""

    id: int
    view: dict[str, Any]
    replayed: bool = False


def _text(name: str, value: Any, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text, not {type(value).__name__}", option=name)
    if "\x00" in value:
        raise InvalidInput(f"{name} holds a NUL character (\\0)", option=name)
    if len(value) > limit:
        raise InvalidInput(f"{name} is {len(value):,} characters long; at most {limit:,}",
                           option=name)  # fmt: skip
    return value


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{name} must be a number, not {type(value).__name__}", option=name)
    try:
        number = float(value)
    except OverflowError:  # an integer past any double
        raise InvalidInput(f"{name} is beyond any coordinate", option=name) from None
    if not math.isfinite(number):
        raise InvalidInput(f"{name} must be a finite number, not {value}", option=name)
    return number


def storage_point(lon: Any, lat: Any, crs: str | None = None) -> tuple[float, float]:
    """The point given in ``crs`` (any CRS twin.crs reads, GCJ-02 and BD-09 included; x or
    longitude first), as longitude and latitude in the storage CRS; InvalidInput naming
    what is wrong (option ``location``)."""
    x, y = _number("location.lon", lon), _number("location.lat", lat)
    if crs is not None:
        _text("location.crs", crs, 200)
        try:
            x, y = point_to_storage(x, y, crs, option="location", crs_option="location.crs",
                                    srid=SRID)  # fmt: skip
        except InvalidInput as exc:
            if exc.option != "location":  # the CRS itself, named as it came
                raise
            raise InvalidInput(f"location: {exc}", option="location") from None
    try:
        spatial.check_point(x, y)
    except InvalidInput as exc:
        raise InvalidInput(f"location: {exc}", option="location") from None
    return x, y


def _reporter(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput("reporter must be an object of name, phone and email", option="reporter")
    unknown = [str(k).replace("\x00", "")[:40] for k in value if k not in REPORTER_FIELDS]
    if unknown:
        raise InvalidInput(f"reporter: unknown field {unknown[0]!r}; it takes name, phone, email",
                           option="reporter")  # fmt: skip
    return {k: _text(f"reporter.{k}", value[k], MAX_REPORTER_FIELD) for k in REPORTER_FIELDS
            if value.get(k) not in (None, "")}  # fmt: skip


EARLIEST_REPORT_YEAR = 1990


def _when(value: Any, now: datetime) -> datetime:
    if value is None:
        return now
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(_text("reported_at", value, 64).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"reported_at {value[:40]!r} is not a date-time (RFC 3339)",
                               option="reported_at") from None  # fmt: skip
    if not isinstance(value, datetime):
        raise InvalidInput("reported_at must be a date-time", option="reported_at")
    if value.tzinfo is None:
        raise InvalidInput("reported_at needs its time zone (e.g. +08:00 or Z)",
                           option="reported_at")  # fmt: skip
    if value > now + FUTURE_SLACK:
        raise InvalidInput("reported_at lies in the future", option="reported_at")
    if value.year < EARLIEST_REPORT_YEAR:  # and due times, windows stay on the calendar
        raise InvalidInput(
            f"reported_at {value.isoformat()} is before {EARLIEST_REPORT_YEAR}: not a report"
            " of this city's", option="reported_at",
        )  # fmt: skip
    return value


# For each report (numbered from 1): its category (as categories.get_category reads it)
# and the jurisdiction chain of its point (as spatial.jurisdiction_chain lists it), in one
# statement for all; a report of an unknown category has no row.
_CATEGORIES_AND_CHAINS = """
    SELECT r.n, c.code, c.name, c.parent_code, c.asset_layers, c.attach_radius_m,
           c.response_hours, c.resolve_hours, c.priority, c.fusion_radius_m, c.fusion_hours,
           c.dataset, here.chain
    FROM unnest(%(codes)s::text[], %(lons)s::float8[], %(lats)s::float8[])
         WITH ORDINALITY AS r(code, lon, lat, n)
    CROSS JOIN LATERAL (SELECT * FROM incident_categories WHERE code = r.code OFFSET 0) c
    CROSS JOIN LATERAL (
        SELECT coalesce(jsonb_agg(jsonb_build_object('code', j.code, 'name', j.name,
                                                     'level', j.level)
                        ORDER BY array_position(
                            ARRAY['city','district','street','grid','community'], j.level),
                        j.code), '[]') AS chain
        FROM jurisdictions j
        WHERE j.geom && ST_SetSRID(ST_MakePoint(r.lon, r.lat), 4326)
          AND ST_Intersects(j.geom, ST_SetSRID(ST_MakePoint(r.lon, r.lat), 4326))
    ) AS here
"""
# Two retries at once wait for each other here (in one order of keys), so one row is made.
_KEY_TURNS = ("SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT"
              " hashtextextended(k, 11) AS h FROM unnest(%s::text[]) AS u(k) ORDER BY 1) AS x")  # fmt: skip
_KEYS_TAKEN = (
    "SELECT idempotency_key, id, payload_hash FROM incidents WHERE idempotency_key = ANY(%s)"
)
# The ids of the reports to store, in order; and the commit waits for the disk whatever
# the server's setting (the embedded cluster's is off, for bulk loads): a report answered
# 201 must survive a crash. (Nothing is written without ids: a replay writes nothing.)
_NEW_IDS = ("SELECT nextval(pg_get_serial_sequence('incidents', 'id')),"
            " set_config('synchronous_commit', 'on', true) FROM generate_series(1, %s)")  # fmt: skip


def _attach(conn: psycopg.Connection, asked: Sequence[tuple[categories.Category, float, float]]
            ) -> list[list[dict[str, Any]]]:  # fmt: skip
    """For each report (its category, lon, lat): the nearest assets of the category's
    layers within its radius, nearest first; one statement for all."""
    near = []
    for category, lon, lat in asked:
        if category.asset_layers:
            layers, networks = categories.attach_layers(category)
            near.append(spatial.Near(lon, lat, layers,
                                     min(category.attach_radius_m, spatial.MAX_DISTANCE_M),
                                     networks))  # fmt: skip
    found = iter(spatial.nearest_within_many(conn, near, k=ASSETS_PER_LAYER,
                                             columns=("source_id", "owner_unit")) if near else [])  # fmt: skip
    answers = []
    for category, _, _ in asked:
        if not category.asset_layers:
            answers.append([])
            continue
        assets = [
            {"layer": layer, "id": int(f["id"]) if f["id"].isdigit() else f["id"],
             "source_id": f["properties"].get("source_id"),
             "owner_unit": f["properties"].get("owner_unit"), "distance_m": f["distance_m"]}
            for layer, features in next(found).items()
            for f in features
        ]  # fmt: skip
        answers.append(sorted(assets, key=lambda a: a["distance_m"]))
    return answers


def _payload_hash(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Checked:
    """A report whose values are checked (``check``), ready for ``take``: what needs no
    data base is known good."""

    fields: dict[str, Any]  # as given, for the idempotency digest and the row
    point: tuple[float, float]  # storage lon, lat
    when: datetime
    key: str | None  # the Idempotency-Key within its scope, as stored
    given_key: str | None  # as the caller gave it, for messages
    digest: str | None
    actor: str

    @property
    def category_code(self) -> str:
        """The category code as given (not yet known to be a category)."""
        return str(self.fields["category"])


def check(
    *,
    category_code: str,
    channel: str,
    lon: float,
    lat: float,
    crs: str | None = None,
    description: str | None = None,
    address: str | None = None,
    reporter: Mapping[str, Any] | None = None,
    reported_at: datetime | str | None = None,
    idempotency_key: str | None = None,
    idempotency_scope: str | None = None,
    actor: str = "intake",
) -> Checked:
    """A report's values checked without the data base (``report``'s arguments but the
    connection): InvalidInput naming the one that is wrong, as ``report`` says."""
    if not isinstance(channel, str) or channel not in INCIDENT_CHANNELS:
        shown = str(channel).replace("\x00", "")[:40]
        raise InvalidInput(f"channel {shown!r} is not one of {', '.join(INCIDENT_CHANNELS)}",
                           option="channel")  # fmt: skip
    given = _text("Idempotency-Key", idempotency_key, MAX_KEY) or None
    # Stored with its scope, length-prefixed so no two scopes and keys read the same.
    key = (given if given is None or idempotency_scope is None
           else f"{len(idempotency_scope)}:{idempotency_scope}:{given}")  # fmt: skip
    now = datetime.now(UTC)
    fields = {
        "category": _text("category", category_code, 100), "channel": channel,
        "location": [lon, lat, crs], "description": _text("description", description,
                                                          MAX_DESCRIPTION),
        "address": _text("address", address, MAX_ADDRESS), "reporter": _reporter(reporter),
        "reported_at": None if reported_at is None else str(reported_at),
    }  # fmt: skip
    point = storage_point(lon, lat, crs)
    when = _when(reported_at, now)
    return Checked(fields, point, when, key, given, _payload_hash(fields) if key else None,
                   actor)  # fmt: skip


def report(conn: psycopg.Connection, **values: Any) -> Incident:
    """Take a report: check it, attach it, dispatch it, store it with its first events and
    a change of the incidents layer, in one transaction; the incident as staff see it.
    A report of an open incident (``fusion.find_original``) is stored as its duplicate
    instead of dispatched, the join on both timelines. The arguments are ``check``'s.

    InvalidInput naming the input that is wrong (``option``): an unknown category or
    channel, a location that is no finite number, beyond its CRS or off the globe, text
    too long or holding NUL. With ``idempotency_key``: the same key and payload again
    answer the incident already taken (``replayed``), a different payload Conflict; keys
    are the caller's own within ``idempotency_scope`` (the key holder's name): another
    caller's key of the same text is another key."""
    taken = take(conn, [check(**values)])[0]
    if isinstance(taken, TwinError):
        raise taken
    return taken


def _unknown_category(code: str) -> InvalidInput:
    return InvalidInput(f"category {code!r} is not a category (GET /categories lists them)",
                        option="category")  # fmt: skip


def take(conn: psycopg.Connection, reports: Sequence[Checked]) -> list[Incident | TwinError]:
    """Take reports that came together (``check``'s) in one transaction, as ``report``
    takes one: each attached, checked for fusion (with the committed incidents and with
    the reports before it here: two of one problem, the second joins the first),
    dispatched and stored, with one change of the incidents layer for all. For each, in
    order, its incident, or the error that refused it (an unknown category, an
    Idempotency-Key's Conflict), which stores nothing of it and does not stop the others.
    When the data base refuses the transaction (a deadlock between two intakes' turns),
    each report is taken again alone."""
    if len(reports) > 1:
        try:
            return _take(conn, reports)
        except psycopg.Error:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                raise
            return [one for r in reports for one in _take_alone(conn, r)]
    return _take(conn, reports)


def _take_alone(conn: psycopg.Connection, checked: Checked) -> list[Incident | TwinError]:
    try:
        return _take(conn, [checked])
    except TwinError as exc:
        return [exc]


def _take(conn: psycopg.Connection, reports: Sequence[Checked]) -> list[Incident | TwinError]:
    answers: list[Incident | TwinError | None] = [None] * len(reports)
    # In a pipeline: a statement whose answer is not read at once (BEGIN, the turns) goes
    # with the next one, not in a round trip of its own.
    with conn.pipeline(), conn.transaction():
        keyed = [r.key for r in reports if r.key is not None]
        taken: dict[str, tuple[int, str]] = {}
        if keyed:
            conn.execute(_KEY_TURNS, (keyed,))
            taken = {k: (int(i), h) for k, i, h in conn.execute(_KEYS_TAKEN, (keyed,))}
        first_of_key: dict[str, int] = {}  # a key's first report here, which stores
        again: list[int] = []  # reports under a key an earlier one here takes
        for n, r in enumerate(reports):
            if r.key is None:
                continue
            if r.key in taken:
                incident_id, digest = taken[r.key]
                answers[n] = (_key_conflict(r, incident_id) if digest != r.digest
                              else Incident(incident_id, get(conn, incident_id), replayed=True))  # fmt: skip
            elif r.key in first_of_key:
                again.append(n)
            else:
                first_of_key[r.key] = n
        asked = [n for n, a in enumerate(answers) if a is None and n not in again]
        rows: dict[int, dict[str, Any]] = {}
        if asked:
            # Both in one round trip: the ids (in order, so a report stored before another
            # here has the lower id) and the categories and chains.
            numbered = conn.execute(_NEW_IDS, (len(asked),))
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(_CATEGORIES_AND_CHAINS, {
                    "codes": [reports[n].category_code for n in asked],
                    "lons": [reports[n].point[0] for n in asked],
                    "lats": [reports[n].point[1] for n in asked]})  # fmt: skip
                ids = [int(i) for i, _ in numbered.fetchall()]
                rows = {asked[int(row.pop("n")) - 1]: row for row in cur.fetchall()}
        stored = []
        for n in asked:
            if n in rows:
                stored.append(n)
            else:
                answers[n] = _unknown_category(reports[n].category_code)
        new_ids = dict(zip(stored, ids, strict=False)) if asked else {}  # gaps: as a sequence has
        if stored:
            _store(conn, reports, stored, rows, new_ids, answers)
        for n in again:  # the same key twice here: the first is stored, or refused
            r = reports[n]
            first = first_of_key[r.key]  # type: ignore[index]
            done = answers[first]
            if isinstance(done, TwinError):
                answers[n] = done
            elif reports[first].digest != r.digest:
                answers[n] = _key_conflict(r, new_ids[first])
            else:
                answers[n] = Incident(new_ids[first], get(conn, new_ids[first]), replayed=True)
    assert all(a is not None for a in answers)
    return answers  # type: ignore[return-value]


def _key_conflict(checked: Checked, incident_id: int) -> Conflict:
    return Conflict(
        f"Idempotency-Key {(checked.given_key or '')[:60]!r} was used for another report "
        f"(incident {incident_id}); send a new key for a new report"
    )


def _store(conn: psycopg.Connection, reports: Sequence[Checked], stored: list[int],
           rows: dict[int, dict[str, Any]], new_ids: dict[int, int],
           answers: list[Incident | TwinError | None]) -> None:  # fmt: skip
    """Attach, check for fusion, dispatch and store the reports ``stored`` (their places
    in ``reports``, their categories' and chains' ``rows``, their ``new_ids``); their
    answers go into ``answers``."""
    chains = {n: rows[n].pop("chain") for n in stored}
    cats = {n: categories._category(rows[n]) for n in stored}
    assets = dict(zip(stored, _attach(conn, [(cats[n], *reports[n].point) for n in stored]),
                      strict=True))  # fmt: skip
    placed = [n for n in stored if chains[n]]
    # The candidate rules and the centres are asked for before the fusion check, so all
    # answers come in one round trip; a report fused needs none (its rows go unread).
    candidates = None
    centres: list[tuple[str, str, str]] = []
    if placed:
        candidates = responsibilities.send_candidates_many(
            conn, [(cats[n].code, [j["code"] for j in chains[n]]) for n in placed]
        )
        centred = conn.execute(dispatch.CENTRES, (sorted({j["code"] for n in placed
                                                          for j in chains[n]}),))  # fmt: skip
    originals = fusion.find_originals(
        conn, [fusion.Asked(cats[n], reports[n].point, reports[n].when, assets[n]) for n in stored]
    )
    by_report: dict[int, list[dict[str, Any]]] = {n: [] for n in placed}
    if candidates is not None:
        with candidates:
            for row in candidates.fetchall():
                by_report[placed[int(row["n"]) - 1]].append(row)
        centres = centred.fetchall()
    decisions: dict[int, dispatch.Decision] = {}
    duplicate_of: dict[int, int | None] = {}
    events: list[tuple[int, str, str, str | None, str, str]] = []
    for where, n in enumerate(stored):
        r, incident_id, found = reports[n], new_ids[n], originals[where]
        channel = r.fields["channel"]
        events.append((incident_id, r.actor, "reported", None, "reported",
                       f"by {channel.replace('_', ' ')}"))  # fmt: skip
        if found is None:
            decision = dispatch.decide(cats[n], chains[n], assets[n], by_report.get(n, []),
                                       centres)  # fmt: skip
            decisions[n], duplicate_of[n] = decision, None
            if decision.unit_code is not None:
                events.append((incident_id, "dispatch",
                               "escalated" if decision.escalated else "dispatched",
                               "reported", "dispatched", decision.reason))  # fmt: skip
            continue
        # The same problem again: it joins the original, no second unit goes.
        if isinstance(found, fusion.Earlier):
            first = stored[found.index]
            original, why, status = new_ids[first], found.why, decisions[first].status
        else:
            original, why, status = found
        decisions[n] = dispatch.Decision(None, None, "fused",
                                         f"fused with incident {original}: {why}")  # fmt: skip
        duplicate_of[n] = original
        note = f"fused: report {incident_id} joined incident {original} ({why})"
        events.append((incident_id, "fusion", "fused", "reported", "duplicate", note))
        events.append((original, "fusion", "fused", status, status, note))
    inserted = _insert(conn, reports, stored, cats, chains, assets, decisions, duplicate_of,
                       new_ids)  # fmt: skip
    timelines = _events(conn, events)
    # A frequent writer: its growth goes to a catalogue delta row of its own
    # (twin/changes.py), so concurrent intakes do not queue on the layer's row. One
    # change for all the reports taken together, its box around them all.
    lons = [reports[n].point[0] for n in stored]
    lats = [reports[n].point[1] for n in stored]
    changes.record(conn, LAYER, "intake", box=(min(lons), min(lats), max(lons), max(lats)),
                   features=len(stored), added_only=True, table=TABLE)  # fmt: skip
    for n in stored:
        # The answer from what is in hand (the insert's RETURNING), as get reads it.
        row = inserted[new_ids[n]]
        row.update(category_name=cats[n].name, unit_name=decisions[n].unit_name, reopens=0)
        timeline = timelines.get(new_ids[n], [])
        view = _staff_view(row, timeline)
        # A report just taken has no photos yet (report_with_photos adds them, then reads).
        view["photos"] = []
        for entry in timeline:
            entry["photos"] = []
        answers[n] = Incident(new_ids[n], view)


def _insert(conn: psycopg.Connection, reports: Sequence[Checked], stored: list[int],
            cats: dict[int, categories.Category], chains: dict[int, list[dict[str, Any]]],
            assets: dict[int, list[dict[str, Any]]], decisions: dict[int, dispatch.Decision],
            duplicate_of: dict[int, int | None], new_ids: dict[int, int]
            ) -> dict[int, dict[str, Any]]:  # fmt: skip
    """Store the incidents, in one statement; by id, the columns of each one's staff view
    (``_VIEW``) as stored, but the category's, the unit's names and the reopens, which
    the caller has."""
    stored_rows = []
    for n in stored:
        r, category, decision = reports[n], cats[n], decisions[n]
        values = {
            "id": new_ids[n], "category_code": category.code, "channel": r.fields["channel"],
            "description": r.fields["description"], "address": r.fields["address"],
            "status": decision.status if duplicate_of[n] is None else "duplicate",
            "unit_code": decision.unit_code, "dispatch": decision.as_dict(),
            "escalated": decision.escalated, "outside": decision.outside,
            "jurisdictions": chains[n], "assets": assets[n],
            "due_response_at": r.when + timedelta(hours=category.response_hours),
            "due_resolve_at": r.when + timedelta(hours=category.resolve_hours),
            "tracking_token": secrets.token_urlsafe(18), "idempotency_key": r.key,
            "payload_hash": r.digest, "reporter": r.fields["reporter"],
            "reported_at": r.when, "duplicate_of": duplicate_of[n], "lon": r.point[0],
            "lat": r.point[1],
        }  # fmt: skip
        stored_rows.append(values)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_INSERT, (_json(stored_rows),))
        return {row["id"]: row for row in cur.fetchall()}


def _json(rows: Any) -> str:
    """A batch's rows as one JSON text for ``jsonb_to_recordset``: orjson writes it in a
    fraction of the time psycopg takes to write a column of arrays per field."""
    return orjson.dumps(rows).decode()


_INSERT = """
    INSERT INTO incidents (id, category_code, channel, description, address, status, unit_code,
        dispatch, escalated, outside, jurisdictions, assets, due_response_at, due_resolve_at,
        tracking_token, idempotency_key, payload_hash, reporter, reported_at, duplicate_of,
        geom)
    SELECT id, category_code, channel, description, address, status, unit_code, dispatch,
        escalated, outside, jurisdictions, assets, due_response_at, due_resolve_at,
        tracking_token, idempotency_key, payload_hash, reporter, reported_at, duplicate_of,
        ST_SetSRID(ST_MakePoint(lon, lat), 4326)
    FROM jsonb_to_recordset(%s::text::jsonb) AS r(id bigint, category_code text, channel text,
        description text, address text, status text, unit_code text, dispatch jsonb,
        escalated bool, outside bool, jurisdictions jsonb, assets jsonb,
        due_response_at timestamptz, due_resolve_at timestamptz, tracking_token text,
        idempotency_key text, payload_hash text, reporter jsonb, reported_at timestamptz,
        duplicate_of bigint, lon float8, lat float8)
    RETURNING id, status, category_code, channel, description, address, ST_X(geom) AS lon,
        ST_Y(geom) AS lat, unit_code, dispatch, escalated, outside, duplicate_of, assets,
        jurisdictions, due_response_at, due_resolve_at, reported_at, created_at, updated_at,
        version, tracking_token, reporter
"""
_EVENTS = (
    "INSERT INTO incident_events (incident_id, actor, action, from_status, to_status, note)"
    " SELECT * FROM jsonb_to_recordset(%s::text::jsonb) AS r(incident_id bigint, actor text,"
    " action text, from_status text, to_status text, note text)"
    " RETURNING id, incident_id, at, actor, action, from_status, to_status, note"
)
_EVENT_FIELDS = ("incident_id", "actor", "action", "from_status", "to_status", "note")


def _events(conn: psycopg.Connection, events: list[tuple[int, str, str, str | None, str, str]]
            ) -> dict[int, list[dict[str, Any]]]:  # fmt: skip
    """Append the steps (incident, actor, action, from, to, note) to the timelines, in
    order, in one statement; each incident's steps as stored, by id."""
    timelines: dict[int, list[dict[str, Any]]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_EVENTS, (_json([dict(zip(_EVENT_FIELDS, e, strict=True)) for e in events]),))
        for row in sorted(cur.fetchall(), key=lambda r: r["id"]):
            timelines.setdefault(row.pop("incident_id"), []).append(row)
    return timelines


def _event(conn: psycopg.Connection, incident_id: int, actor: str, action: str,
           from_status: str | None, to_status: str | None, note: str = "", *,
           at: datetime | None = None) -> None:  # fmt: skip
    """Append a step to the timeline, at ``at`` (a replayed history's time) or now."""
    conn.execute(
        "INSERT INTO incident_events (incident_id, actor, action, from_status, to_status, note,"
        " at) VALUES (%s, %s, %s, %s, %s, %s, COALESCE(%s, now()))",
        (incident_id, actor, action, from_status, to_status, note, at),
    )


_VIEW = """
    SELECT i.id, i.status, i.category_code, c.name AS category_name, i.channel,
           i.description, i.address, ST_X(i.geom) AS lon, ST_Y(i.geom) AS lat,
           i.unit_code, u.name AS unit_name, i.dispatch, i.escalated, i.outside,
           i.duplicate_of, i.assets, i.jurisdictions, i.due_response_at, i.due_resolve_at,
           i.reported_at, i.created_at, i.updated_at, i.version, i.tracking_token, i.reporter,
           (SELECT count(*) FROM incident_events e
            WHERE e.incident_id = i.id AND e.action = 'reopened') AS reopens
    FROM incidents i
    JOIN incident_categories c ON c.code = i.category_code
    LEFT JOIN units u ON u.code = i.unit_code
"""


def _timeline(conn: psycopg.Connection, incident_id: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(
            "SELECT id, at, actor, action, from_status, to_status, note FROM incident_events"
            " WHERE incident_id = %s ORDER BY id", (incident_id,),
        ))  # fmt: skip


def _check_id(incident_id: int) -> None:
    if (
        isinstance(incident_id, bool)
        or not isinstance(incident_id, int)
        or not (0 < incident_id < 2**63)
    ):
        raise NotFound(f"no incident {incident_id}")


def _staff_view(row: dict[str, Any], timeline: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row["id"], "status": row["status"],
        "category": {"code": row["category_code"], "name": row["category_name"]},
        "channel": row["channel"], "description": row["description"],
        "address": row["address"],
        "location": {"lon": row["lon"], "lat": row["lat"]},
        "unit": None if row["unit_code"] is None
        else {"code": row["unit_code"], "name": row["unit_name"]},
        "dispatch": row["dispatch"], "escalated": row["escalated"], "outside": row["outside"],
        "duplicate_of": row["duplicate_of"], "assets": row["assets"],
        "jurisdictions": row["jurisdictions"],
        "due_at": {"response": row["due_response_at"], "resolve": row["due_resolve_at"]},
        "reported_at": row["reported_at"], "created_at": row["created_at"],
        "updated_at": row["updated_at"], "version": row["version"],
        "reopens": row["reopens"], "tracking_token": row["tracking_token"], "reporter": row["reporter"],
        "timeline": timeline,
    }  # fmt: skip


def _unseen(incident_id: int, holder: keys.Holder) -> NotFound:
    # Not found, rather than forbidden: a key does not learn of work outside its scope.
    return NotFound(f"no incident {incident_id} in what this key sees ({holder.scope_words})")


def _codes(jurisdictions: Any) -> list[str]:
    return [j["code"] for j in jurisdictions or ()]


def seen_by(holder: keys.Holder, view: Mapping[str, Any]) -> bool:
    """Whether an incident as staff or a list see it (``get``, ``list_incidents``) is
    within ``holder``'s scope."""
    return holder.sees((view["unit"] or {}).get("code"), _codes(view["jurisdictions"]))


def get(
    conn: psycopg.Connection, incident_id: int, holder: keys.Holder | None = None
) -> dict[str, Any]:
    """The incident as staff see it (with the reporter's contacts, the timeline and the
    photos, originals included); NotFound otherwise, or when it is outside ``holder``'s scope (a unit's staff see their
    unit's work only)."""
    _check_id(incident_id)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_VIEW + " WHERE i.id = %s", (incident_id,)).fetchone()
    if row is None:
        raise NotFound(f"no incident {incident_id}")
    if holder is not None and not holder.sees(row["unit_code"], _codes(row["jurisdictions"])):
        raise _unseen(incident_id, holder)
    view = _staff_view(row, _timeline(conn, incident_id))
    view["photos"] = photos.listing(conn, incident_id, view["timeline"], public=False)
    return view


def check_scope(conn: psycopg.Connection, incident_id: int, holder: keys.Holder | None) -> None:
    """NotFound when the incident is outside ``holder``'s scope (None: no limit)."""
    if holder is None or (holder.unit_code is None and holder.jurisdiction_code is None):
        return
    row = conn.execute(
        "SELECT unit_code, jurisdictions FROM incidents WHERE id = %s", (incident_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no incident {incident_id}")
    if not holder.sees(row[0], _codes(row[1])):
        raise _unseen(incident_id, holder)


def public(conn: psycopg.Connection, token: str) -> dict[str, Any]:
    """What a resident sees of their report by its tracking token: the status, category,
    the unit that has it, the due times, the timeline's steps and the public copies of
    its photos (no metadata); nobody's personal data (no reporter, no staff names or
    notes, no description); a report fused with another
    incident tells which it ``joined`` and how that one stands. NotFound for an unknown
    token."""
    if not isinstance(token, str) or "\x00" in token or not 0 < len(token) <= 100:
        raise NotFound("no report has this tracking token")
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_VIEW + " WHERE i.tracking_token = %s", (token,)).fetchone()
        if row is None:
            raise NotFound("no report has this tracking token")
        steps = list(cur.execute(
            "SELECT id, at, action, from_status, to_status FROM incident_events"
            " WHERE incident_id = %s ORDER BY id", (row["id"],),
        ))  # fmt: skip
        shown = photos.listing(conn, row["id"], steps, public=True)
        for step in steps:
            del step["id"]  # the data base's numbering is no resident's business
        joined = None
        if row["duplicate_of"] is not None:
            # The resident follows the incident their report joined: its progress, not
            # its reporter, token or notes.
            original = cur.execute(_VIEW + " WHERE i.id = %s", (row["duplicate_of"],)).fetchone()
            assert original is not None  # a foreign key: it cannot be gone
            joined = {
                "incident": original["id"], "status": original["status"],
                "unit": None if original["unit_name"] is None
                else {"name": original["unit_name"]},
                "due_at": {"response": original["due_response_at"],
                           "resolve": original["due_resolve_at"]},
            }  # fmt: skip
    return {
        "status": row["status"],
        "category": {"code": row["category_code"], "name": row["category_name"]},
        "channel": row["channel"], "reported_at": row["reported_at"],
        "unit": None if row["unit_name"] is None else {"name": row["unit_name"]},
        "due_at": {"response": row["due_response_at"], "resolve": row["due_resolve_at"]},
        "timeline": steps, "joined": joined, "photos": shown,
    }  # fmt: skip


def list_incidents(
    conn: psycopg.Connection,
    *,
    unit: str | None = None,
    status: str | Sequence[str] | None = None,
    category: str | Sequence[str] | None = None,
    jurisdiction: str | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    overdue: bool | None = None,
    limit: int = 100,
    after: int | None = None,
    holder: keys.Holder | None = None,
    ids: Sequence[int] | None = None,
    descriptions: bool = False,
) -> dict[str, Any]:
    """Incidents, newest first, by filters (each exact: ``category`` takes the categories
    under it too, ``jurisdiction`` the incidents whose chain holds it, ``overdue`` those
    open past a due time now, or not), ``limit`` a page and ``after`` the last id of the
    page before, within ``holder``'s scope. ``status`` and ``category`` may be lists (any
    of them), ``ids`` keeps those incidents. No reporter's data in a list; the
    descriptions (free text a resident typed) only with ``descriptions``, for callers who
    may read them."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be from 1 to {MAX_PAGE}", option="limit")
    if after is not None and not 0 < after < 2**63:
        raise InvalidInput("after must be an incident id", option="after")
    statuses = [status] if isinstance(status, str) else status
    codes = [category] if isinstance(category, str) else category
    for name, values in (("unit", [unit]), ("status", statuses or []),
                         ("category", codes or []), ("jurisdiction", [jurisdiction])):  # fmt: skip
        for value in values:
            if value is not None:
                _text(name, value, 100)
    for value in statuses or []:
        if value not in INCIDENT_STATUSES:
            raise InvalidInput(f"status {value!r} is not one of {', '.join(INCIDENT_STATUSES)}",
                               option="status")  # fmt: skip
    where, params = ["TRUE"], {}  # type: ignore[var-annotated]
    if unit is not None:
        if conn.execute("SELECT 1 FROM units WHERE code = %s", (unit,)).fetchone() is None:
            raise InvalidInput(f"there is no unit {unit[:60]!r}", option="unit")
        where.append("i.unit_code = %(unit)s")
        params["unit"] = unit
    if statuses is not None:
        where.append("i.status = ANY(%(status)s)")
        params["status"] = list(statuses)
    if codes is not None:
        where.append("i.category_code = ANY(%(categories)s)")
        try:
            params["categories"] = [
                below for code in codes
                for below in (code, *(c.code for c in categories.descendants(conn, code)))
            ]  # fmt: skip
        except NotFound as exc:  # a filter's value, not a resource: 400, named
            raise InvalidInput(str(exc), option="category") from None
    if ids is not None:
        where.append("i.id = ANY(%(ids)s)")
        params["ids"] = [i for i in ids if isinstance(i, int) and 0 < i < 2**63]
    if jurisdiction is not None:
        known = conn.execute("SELECT 1 FROM jurisdictions WHERE code = %s", (jurisdiction,))
        if known.fetchone() is None:
            raise InvalidInput(f"there is no jurisdiction {jurisdiction[:60]!r}",
                               option="jurisdiction")  # fmt: skip
        where.append("i.jurisdictions @> %(place)s")
        params["place"] = Jsonb([{"code": jurisdiction}])
    if bbox is not None:
        west, south, east, north = (_number("bbox", v) for v in bbox)
        if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
            raise InvalidInput("bbox: west,south,east,north in degrees, west ≤ east, south ≤ "
                               "north", option="bbox")  # fmt: skip
        where.append("i.geom && ST_MakeEnvelope(%(w)s, %(s)s, %(e)s, %(n)s, 4326)")
        params.update(w=west, s=south, e=east, n=north)
    for name, value, test in (("since", since, ">="), ("until", until, "<")):
        if value is not None:
            if value.tzinfo is None:
                raise InvalidInput(f"{name} needs its time zone", option=name)
            where.append(f"i.reported_at {test} %({name})s")
            params[name] = value
    if overdue is not None:
        test = OVERDUE_WHERE.as_string(conn)
        where.append(test if overdue else f"NOT {test}")
        params.update(overdue_params(datetime.now(UTC)))
    if after is not None:
        where.append("i.id < %(after)s")
        params["after"] = after
    if holder is not None and holder.role == "unit_staff":
        where.append("i.unit_code = %(own_unit)s")
        params["own_unit"] = holder.unit_code
    if holder is not None and holder.jurisdiction_code is not None:
        where.append("i.jurisdictions @> %(scope)s")
        params["scope"] = Jsonb([{"code": holder.jurisdiction_code}])
    params["limit"] = limit
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            _VIEW + " WHERE " + " AND ".join(where) + " ORDER BY i.id DESC LIMIT %(limit)s",
            params,
        ).fetchall()
    private = (
        "reporter",
        "tracking_token",
        "timeline",
        *(() if descriptions else ("description",)),
    )
    listed = []
    for row in rows:
        view = _staff_view(row, [])
        for name in private:
            view.pop(name)
        listed.append(view)
    return {
        "incidents": listed,
        "count": len(listed),
        "next_after": listed[-1]["id"] if len(listed) == limit else None,
    }


# Timeline entries that record what came with a report, not a step of the loop.
NOTE_ACTIONS = ("media_attached", "received_from")


def add_note(conn: psycopg.Connection, incident_id: int, action: str, note: str, *,
             actor: str) -> None:  # fmt: skip
    """Append to the incident's timeline what came with its report (``NOTE_ACTIONS``: a
    link to its media, the sender's own ids), its status unchanged, in the caller's
    transaction; staff read the note, a resident's tracking shows only the step."""
    if action not in NOTE_ACTIONS:
        raise InvalidInput(f"{action!r} is not one of {', '.join(NOTE_ACTIONS)}", option="action")
    _check_id(incident_id)
    note = _text("note", note, MAX_NOTE)
    row = conn.execute("SELECT status FROM incidents WHERE id = %s", (incident_id,)).fetchone()
    if row is None:
        raise NotFound(f"no incident {incident_id}")
    _event(conn, incident_id, actor, action, row[0], row[0], note)


def id_of_token(conn: psycopg.Connection, token: str) -> int:
    """The id of the incident whose tracking token this is; NotFound otherwise."""
    if not isinstance(token, str) or "\x00" in token or not 0 < len(token) <= 100:
        raise NotFound("no report has this tracking token")
    row = conn.execute("SELECT id FROM incidents WHERE tracking_token = %s", (token,)).fetchone()
    if row is None:
        raise NotFound("no report has this tracking token")
    return int(row[0])


def latest_steps(conn: psycopg.Connection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """For each incident of ``ids``: its latest step of the loop ``{at, action,
    from_status, to_status}`` (no actor, no note: what a resident may see) and the latest
    media link recorded with it (``media_url``, or None)."""
    wanted = [i for i in ids if isinstance(i, int) and 0 < i < 2**63]
    found: dict[int, dict[str, Any]] = {i: {"step": None, "media_url": None} for i in wanted}
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(
            "SELECT DISTINCT ON (incident_id, action = %(media)s) incident_id, at, action,"
            " from_status, to_status, note FROM incident_events"
            " WHERE incident_id = ANY(%(ids)s) AND action <> %(received)s"
            " ORDER BY incident_id, action = %(media)s, id DESC",
            {"ids": wanted, "media": NOTE_ACTIONS[0], "received": NOTE_ACTIONS[1]},
        ):
            entry = found[row["incident_id"]]
            if row["action"] == NOTE_ACTIONS[0]:
                entry["media_url"] = row["note"] or None
            else:
                entry["step"] = {k: row[k] for k in ("at", "action", "from_status", "to_status")}
    return found


def check_version(version: Any) -> int:
    """The version a caller saw, checked: a whole number (not a boolean, not text)."""
    if isinstance(version, bool) or not isinstance(version, int) or not 0 < version < 2**31:
        raise InvalidInput("version must be the incident's version, a whole number",
                           option="version")  # fmt: skip
    return version


def lock_current(
    conn: psycopg.Connection, incident_id: int, expected_version: int
) -> tuple[str, str | None, float, float]:
    """Lock the incident for a change and check it is still at ``expected_version``:
    (status, unit_code, lon, lat); NotFound, or StaleVersion when someone acted first."""
    row = conn.execute(
        "SELECT status, version, unit_code, ST_X(geom), ST_Y(geom) FROM incidents"
        " WHERE id = %s FOR UPDATE",
        (incident_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no incident {incident_id}")
    status, version, unit_code, lon, lat = row
    if version != expected_version:
        raise StaleVersion(
            f"incident {incident_id} is at version {version}, not {expected_version}: "
            "someone changed it since you read it; read it again and decide anew"
        )
    return status, unit_code, lon, lat


def dispatch_manually(
    conn: psycopg.Connection,
    incident_id: int,
    unit_code: str,
    *,
    actor: str,
    note: str = "",
    expected_version: int,
    holder: keys.Holder | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """A dispatcher gives the incident to ``unit_code`` (a first dispatch or a
    reassignment), against the version they saw: Conflict when it changed since (someone
    else acted first) or the work is over; InvalidInput for a unit not stored; NotFound
    for an unknown incident or one outside ``holder``'s scope. The incident as staff see
    it after. ``at``: when it was done, for a history replayed (the demo's); the API never
    gives it, so it is now."""
    _check_id(incident_id)
    unit_code = _text("unit", unit_code, 100)
    note = _text("note", note, MAX_NOTE)
    expected_version = check_version(expected_version)
    with conn.transaction():
        status, before, lon, lat = lock_current(conn, incident_id, expected_version)
        check_scope(conn, incident_id, holder)
        if status in FINISHED:
            raise Conflict(f"incident {incident_id} is {status}: it can no longer be dispatched")
        unit = conn.execute("SELECT name FROM units WHERE code = %s", (unit_code,)).fetchone()
        if unit is None:
            raise InvalidInput(f"unit {unit_code!r} is not a unit", option="unit")
        action = "dispatched" if before is None else "reassigned"
        reason = (
            f"{action} by {actor} to {unit[0]}" + (f" (from {before})" if before else "")
            + (f": {note}" if note else "")
        )  # fmt: skip
        conn.execute(
            "UPDATE incidents SET unit_code = %s, status = 'dispatched', dispatch = %s,"
            " escalated = false, version = version + 1, updated_at = COALESCE(%s, now())"
            " WHERE id = %s",
            (unit_code, Jsonb({"rule": None, "how": "manual", "reason": reason}), at,
             incident_id),
        )  # fmt: skip
        _event(conn, incident_id, actor, action, status, "dispatched", note, at=at)
        # Nothing moved and the count holds: the layer's version moves, no recount.
        changes.record(conn, LAYER, "dispatch", box=(lon, lat, lon, lat), features=1, table=None)
        return get(conn, incident_id)
