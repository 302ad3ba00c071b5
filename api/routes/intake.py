"""Intake, the incident resource and resident tracking over HTTP. Thin: the core
(twin.incidents.intake) checks every value, attaches, dispatches and stores; this module
reads the body within its bound and shapes the answers.

Who may call: reporting, reading and dispatching are staff's for now (hotline operators,
grid inspectors' apps and trusted systems hold keys; residents' own role comes with the
roles); ``GET /track/{token}`` is public and shows no one's personal data.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi import status as http

from api.access import Dispatcher, IncidentStaff, Public, Reporter
from api.deps import (
    FastJSON,
    KnownParameters,
    Plain,
    WritesLayers,
    with_connection,
    with_pool_connection,
)
from api.errors import PreconditionFailed, TooLarge
from api.routes import photos as photo_routes
from api.routes.imports import json_body, parse_json
from twin import keys
from twin.errors import InvalidInput, StaleVersion
from twin.incidents import intake, loop, photos

router = APIRouter(tags=["incidents"])
MAX_BODY_KB = 64  # a report is a few fields; its photos come in a multipart form
REPORT_FIELDS = ("category", "channel", "location", "description", "address", "reporter",
                 "reported_at")  # fmt: skip
LOCATION_FIELDS = ("lon", "lat", "crs")
DISPATCH_FIELDS = ("unit", "note", "version")
TRANSITION_FIELDS = ("action", "note", "version", "unit", "duplicate_of", "to")
IncidentId = Annotated[int, Path(ge=1, le=2**63 - 1), Plain]
JSON_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


REPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "report": {"type": "string",
                                   "description": "the report's JSON, as the JSON body"},
                        "photo": {"type": "array",
                                  "items": {"type": "string", "format": "binary"}},
                    },
                    "required": ["report"],
                }
            },
        },
    }
}  # fmt: skip
REPORT_USAGE = "e.g. curl -F 'report={\"category\": …}' -F photo=@a.jpg"


def _too_large() -> TooLarge:
    return TooLarge(f"the request body is larger than {MAX_BODY_KB} KB: a report's text is "
                    f"bounded (description at most {intake.MAX_DESCRIPTION:,} characters)")  # fmt: skip


def _step_too_large() -> TooLarge:
    return TooLarge(f"the request body is larger than {MAX_BODY_KB} KB: a step of the loop "
                    f"is a few fields (a note at most {intake.MAX_NOTE:,} characters)")  # fmt: skip


async def _body(request: Request) -> Any:
    return await json_body(request, MAX_BODY_KB * 1024, _too_large)


async def _step_body(request: Request) -> Any:
    return await json_body(request, MAX_BODY_KB * 1024, _step_too_large)


async def _report_body(request: Request) -> tuple[Any, list[bytes]]:
    """The report and its photos: a JSON body, or a multipart form of a ``report`` part
    (the same JSON) and ``photo`` parts, each read within its bound."""
    if not photo_routes.is_form(request):
        if request.headers.get("content-type", "").startswith("application/x-www-form"):
            raise InvalidInput("send the report as a JSON body, or with its photos as "
                               f"multipart/form-data, {REPORT_USAGE}")  # fmt: skip
        return await _body(request), []
    form = await photo_routes.photo_form(request, ("report",), REPORT_USAGE)
    if "report" not in form.text:
        raise InvalidInput(f"the form needs a part report holding the report's JSON, "
                           f"{REPORT_USAGE}", option="report")  # fmt: skip
    return parse_json(form.text["report"], "the form part report"), form.photos


def _fields(document: Any, fields: tuple[str, ...], what: str) -> dict[str, Any]:
    """The body as an object of ``fields``; InvalidInput naming an unknown field."""
    if not isinstance(document, dict):
        raise InvalidInput(f"{what} must be a JSON object of " + ", ".join(fields))
    unknown = [str(k).replace("\x00", "")[:40] for k in document if k not in fields]
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}; {what} takes " + ", ".join(fields),
                           option=unknown[0])  # fmt: skip
    return document


# Reports that arrive while the data base takes others wait and are taken together, in one
# transaction (intake.take): one commit, one change of the layer and far fewer statements
# for many reports. A report alone is taken at once; no report waits for a timer.
MAX_BATCH = 64
# Turns of the event loop a taker lets pass before it takes the reports waiting: the
# requests already read from their sockets meanwhile reach the queue, and join. Not a
# timer (a lone report waits microseconds), yet batches came out twice as large under
# load, 3-8 -> 15 reports a transaction at 32 connections, 14-16 -> 27-31 at 64, and the
# API's CPU a report fell by a fifth (bench/RESULTS.md, "Intake on one connection").
GATHER_TURNS = 4
# Transactions of reports at once per API process: with one, batches are larger and a
# report costs less CPU than with two (bench/RESULTS.md); the processes overlap each other.
IN_FLIGHT = 1
# The batches' own pool (made in the app's lifespan), of IN_FLIGHT connections: every
# batch is taken on the same backend. The operational pool hands its connections out in
# turn, and once staff's other routes have grown it to its 4, each met intake's
# statements a quarter as often: planned afresh, its caches cold, 0.3 ms more a report
# in batches of 16 (0.2 of PostgreSQL, 0.1 of Python; 1.0 ms round 16), in
# bench/RESULTS.md, "Intake on one connection".
POOL = "intake_pool"


class Batches:
    """The reports waiting to be taken, in this API process, and the takers at work:
    each taker takes all that wait (up to ``MAX_BATCH``), answers each report after the
    commit that holds it (or with the error that refused it alone), and goes on while any
    wait."""

    def __init__(self) -> None:
        self._waiting: list[tuple[intake.Checked, asyncio.Future[intake.Incident]]] = []
        self._takers = 0

    async def take(self, request: Request, checked: intake.Checked) -> intake.Incident:
        """The report taken: its incident once committed, or its error raised."""
        answer: asyncio.Future[intake.Incident] = asyncio.get_running_loop().create_future()
        self._waiting.append((checked, answer))
        if self._takers < IN_FLIGHT:
            self._takers += 1
            asyncio.get_running_loop().create_task(self._work(request))
        return await answer

    async def _work(self, request: Request) -> None:
        try:
            while self._waiting:
                for _ in range(GATHER_TURNS):  # the requests read meanwhile join this one
                    await asyncio.sleep(0)
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                try:
                    taken = await with_pool_connection(request, POOL, intake.take,
                                                       [c for c, _ in batch])  # fmt: skip
                except Exception as exc:  # the data base gone, say: every report hears it
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                for (_, answer), one in zip(batch, taken, strict=True):
                    if answer.done():  # its client went away
                        continue
                    if isinstance(one, Exception):
                        answer.set_exception(one)
                    else:
                        answer.set_result(one)
        finally:
            self._takers -= 1


def _batches(request: Request) -> Batches:
    state = request.app.state
    batches = getattr(state, "intake_batches", None)
    if batches is None:
        batches = state.intake_batches = Batches()
    return batches


def _created(incident: intake.Incident) -> FastJSON:
    answer = FastJSON(
        incident.view, status_code=http.HTTP_200_OK if incident.replayed else http.HTTP_201_CREATED
    )
    answer.headers["Location"] = f"/incidents/{incident.id}"
    answer.headers["ETag"] = f'"{incident.view["version"]}"'
    if incident.replayed:
        answer.headers["Idempotent-Replayed"] = "true"
    return answer


@router.post("/incidents", dependencies=[KnownParameters, WritesLayers],
             openapi_extra=REPORT_BODY, response_class=FastJSON,
             status_code=http.HTTP_201_CREATED,
             summary="Report an incident, with photos: attach and dispatch it (any key)")  # fmt: skip
async def post_incident(
    request: Request,
    caller: Reporter,
    body: Annotated[tuple[Any, list[bytes]], Depends(_report_body)],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> FastJSON:
    """``{category, channel, location: {lon, lat, crs?}, description?, address?, reporter?:
    {name, phone, email}, reported_at?}``, as a JSON body or, with photos (随手拍), as a
    multipart form of a ``report`` part holding that JSON and ``photo`` parts (JPEG, PNG
    or WebP files). 201 with the incident as staff see it (its jurisdictions, assets, unit,
    the dispatch's reason and its photos); 200 with the same incident for a retry under
    the same ``Idempotency-Key`` (and the same photos), 409 for another report under it;
    400 naming the field that cannot be used; 413 for a photo over its bytes or pixels,
    415 for a file that is no JPEG, PNG or WebP. A refused photo stores no incident. A
    resident's or an external system's key (or staff reporting outside their scope) is
    answered what the public sees (``/track``) with the incident's id and tracking token;
    a role with channels of its own reports through them (403 for another)."""
    document, uploaded = body
    values = _fields(document, REPORT_FIELDS, "a report")
    channel = keys.channel_for(caller, values.get("channel"))
    location = values.get("location")
    if location is None:
        raise InvalidInput("location is required: {lon, lat} (and crs, e.g. GCJ02)",
                           option="location")  # fmt: skip
    location = _fields(location, LOCATION_FIELDS, "location")
    for name in ("lon", "lat"):
        if name not in location:
            raise InvalidInput(f"location.{name} is required", option=f"location.{name}")
    report = {
        "category_code": values.get("category"), "channel": channel, "lon": location["lon"],
        "lat": location["lat"], "crs": location.get("crs"),
        "description": values.get("description"), "address": values.get("address"),
        "reporter": values.get("reporter"), "reported_at": values.get("reported_at"),
        "idempotency_key": idempotency_key, "idempotency_scope": caller.name,
        "actor": caller.name,
    }  # fmt: skip
    if uploaded:  # its photos stored in the same transaction, alone
        ready = await photo_routes.prepared(request, uploaded)
        incident = await with_connection(request, photos.report_with_photos, ready, **report)
    else:  # checked here, then taken with the reports that came with it
        incident = await _batches(request).take(request, intake.check(**report))
        if incident.replayed:  # a retry: the report it repeats had no photos either
            await with_connection(request, photos.check_replayed, incident.id, [],
                                  idempotency_key)  # fmt: skip
    # A resident or an outside system, or staff reporting beyond their scope (an inspector
    # outside its grid): what the public sees, as the incident's own page would be 404.
    if caller.role in keys.OUTSIDE_ROLES or not intake.seen_by(caller, incident.view):
        token = incident.view["tracking_token"]
        seen = await with_connection(request, intake.public, token)
        incident = intake.Incident(incident.id, {"id": incident.id, "tracking_token": token,
                                                 "version": incident.view["version"], **seen},
                                   replayed=incident.replayed)  # fmt: skip
    return _created(incident)


@router.get("/incidents/{incident_id}", dependencies=[KnownParameters],
            response_class=FastJSON, summary="One incident (incident staff)")  # fmt: skip
async def get_incident(
    request: Request, caller: IncidentStaff, incident_id: IncidentId
) -> FastJSON:
    """The incident with its reporter, assets, jurisdictions, dispatch and timeline; its
    ``version`` is also the ETag, for ``If-Match`` on a dispatch. 404 when unknown or
    outside the key's scope."""
    view = await with_connection(request, intake.get, incident_id, caller)
    return FastJSON(view, headers={"ETag": f'"{view["version"]}"'})


@router.get("/incidents", dependencies=[KnownParameters], response_class=FastJSON,
            summary="Incidents, newest first, by filters (incident staff)")  # fmt: skip
async def list_incidents(
    request: Request,
    caller: IncidentStaff,
    unit: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[str | None, Query(max_length=40)] = None,
    category: Annotated[str | None, Query(max_length=100)] = None,
    jurisdiction: Annotated[str | None, Query(max_length=100)] = None,
    bbox: Annotated[str | None, Query(max_length=200, description="west,south,east,north")] = None,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    overdue: Annotated[bool | None, Query(description="open and past a due time, or not")] = None,
    limit: Annotated[int, Query(ge=1, le=intake.MAX_PAGE), Plain] = 100,
    after: Annotated[int | None, Query(ge=1, le=2**63 - 1), Plain] = None,
) -> FastJSON:
    """A page (``limit``) of incidents without the reporters' data; ``next_after`` is the
    ``after`` of the next page (null on the last)."""
    box = None
    if bbox is not None:
        parts = bbox.split(",")
        try:
            numbers = [float(p) for p in parts if "_" not in p]
        except ValueError:
            numbers = []
        if len(parts) != 4 or len(numbers) != 4:
            raise InvalidInput("bbox: four numbers, west,south,east,north", option="bbox")
        box = (numbers[0], numbers[1], numbers[2], numbers[3])
    found = await with_connection(
        request, intake.list_incidents, unit=unit, status=status, category=category,
        jurisdiction=jurisdiction, bbox=box, since=since, until=until, overdue=overdue,
        limit=limit, after=after, holder=caller,
    )  # fmt: skip
    return FastJSON(found)


def _version(if_match: str | None, given: Any) -> int:
    """The version the dispatcher saw: the body's ``version`` or ``If-Match`` (both: they
    must agree)."""
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or not 0 < given < 2**31:
            raise InvalidInput("version must be the incident's version, a whole number",
                               option="version")  # fmt: skip
        if if_match is not None and if_match.strip() != f'"{given}"':
            raise InvalidInput(f"version {given} and If-Match {if_match[:20]!r} disagree: "
                               "give one of them", option="version")  # fmt: skip
        return given
    if if_match is not None:
        if if_match.strip().startswith("W/"):
            # If-Match compares strongly (RFC 9110 13.1.1): a weak tag never matches.
            raise PreconditionFailed('If-Match takes the incident\'s ETag as it is, e.g. "3", '
                                     "not a weak tag")  # fmt: skip
        text = if_match.strip().strip('"')
        if text.isdigit() and len(text) < 10:
            return int(text)
        raise InvalidInput('If-Match must be the incident\'s ETag, e.g. "3"', option="If-Match")
    raise InvalidInput("give the version you read (the body's version or If-Match): a "
                       "change is refused when the incident changed since", option="version")  # fmt: skip


async def _against_version(request: Request, if_match: str | None, given: Any,
                           call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:  # fmt: skip
    """``call(conn, *args, expected_version=…, **kwargs)`` with the version the caller saw;
    a stale one under ``If-Match`` is 412 Precondition Failed (under ``version`` 409)."""
    version = _version(if_match, given)
    try:
        return await with_connection(request, call, *args, expected_version=version, **kwargs)
    except StaleVersion as exc:
        if given is None and if_match is not None:
            raise PreconditionFailed(str(exc)) from None
        raise


@router.post("/incidents/{incident_id}/dispatch", dependencies=[KnownParameters, WritesLayers],
             openapi_extra=JSON_BODY, response_class=FastJSON,
             summary="Dispatch or reassign an incident by hand (dispatchers)")  # fmt: skip
async def dispatch_incident(
    request: Request,
    caller: Dispatcher,
    incident_id: IncidentId,
    document: Annotated[Any, Depends(_step_body)],
    if_match: Annotated[str | None, Header(alias="If-Match", max_length=100)] = None,
) -> FastJSON:
    """``{unit, note?, version?}`` (or the version in ``If-Match``): 200 with the
    incident; 409 when it changed since that version (412 for ``If-Match``) or its work
    is over, 400 for an
    unknown unit, 404 for an unknown incident."""
    values = _fields(document, DISPATCH_FIELDS, "a dispatch")
    if "unit" not in values:
        raise InvalidInput("unit is required: the code of the unit to dispatch to", option="unit")
    view = await _against_version(
        request, if_match, values.get("version"), intake.dispatch_manually, incident_id,
        values["unit"], actor=caller.name, note=values.get("note") or "", holder=caller,
    )  # fmt: skip
    return FastJSON(view, headers={"ETag": f'"{view["version"]}"'})


@router.post("/incidents/{incident_id}/transitions",
             dependencies=[KnownParameters, WritesLayers], openapi_extra=JSON_BODY,
             response_class=FastJSON, summary="Move an incident along the closed loop (incident staff)")  # fmt: skip
async def transition_incident(
    request: Request,
    caller: IncidentStaff,
    incident_id: IncidentId,
    document: Annotated[Any, Depends(_step_body)],
    if_match: Annotated[str | None, Header(alias="If-Match", max_length=100)] = None,
) -> FastJSON:
    """``{action, note?, version?, unit?, duplicate_of?, to?}`` (or the version in
    ``If-Match``). ``action``: accept, start, resolve, close, send_back, reopen, cancel,
    duplicate (with ``duplicate_of``), not_our_duty, dispatch and reassign (with
    ``unit``). 200 with the incident; 409 when the action is not allowed from its status
    (the answer names the status and what is allowed) or it changed since ``version``, 412
    when it changed since the ``If-Match``; 400 for a wrong value, 404 for an unknown
    incident."""
    values = _fields(document, TRANSITION_FIELDS, "a transition")
    if "action" not in values:
        raise InvalidInput("action is required: one of " + ", ".join(loop.ACTIONS),
                           option="action")  # fmt: skip
    extra = {k: values[k] for k in ("unit", "duplicate_of", "to") if k in values}
    view = await _against_version(
        request, if_match, values.get("version"), loop.transition, incident_id,
        values["action"], actor=caller.name, note=values.get("note"), holder=caller, **extra,
    )  # fmt: skip
    return FastJSON(view, headers={"ETag": f'"{view["version"]}"'})


@router.get("/track/{token}", dependencies=[Public, KnownParameters], response_class=FastJSON,
            summary="A report's status by its tracking token (public)")  # fmt: skip
async def track(request: Request, token: Annotated[str, Path(max_length=100)]) -> FastJSON:
    """Status, category, the unit that has it, due times and the timeline's steps, without
    anyone's personal data; 404 for an unknown token."""
    return FastJSON(await with_connection(request, intake.public, token))
