"""Open311 GeoReport v2 at /open311/v2/, so 311 clients and hotline systems report and
follow incidents unchanged: services (our categories), service requests (our incidents),
tokens (our tracking tokens), each in ``.json`` and ``.xml``. The mapping is api/open311.py;
the core (twin.incidents.intake) checks, stores, attaches and dispatches as for every
channel. Errors are the spec's error documents (api/errors.py writes them under
/open311/).

Who may call: every GET is public and shows no one's personal data (no reporter; a
request's description, free text a resident typed, only to a caller with a key); POST
needs a key, in the form's ``api_key`` or in ``X-API-Key``.

Query parameters and form fields the spec does not define are refused, naming them (a
typo answered as if understood would be worse); ``attribute[…]`` fields are taken and
kept on the timeline, as our services define no attributes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qsl

import psycopg
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from api import open311
from api.access import CheckedInRoute, Public, holder_allowed
from api.deps import base_url, with_connection
from api.errors import TooLarge
from api.open311 import render
from twin import keys
from twin.errors import InvalidInput, NotFound
from twin.incidents import categories, intake

router = APIRouter(prefix="/open311", tags=["open311"])
CHANNEL = "external_system"
MAX_BODY_KB = 64  # a request is a few fields: the description at most 4,000 characters
MAX_FIELDS = 60
MAX_IDS = 1000
PAGE = 1000  # the spec's default: the first 1000 requests …
SPAN = timedelta(days=90)  # … of at most 90 days
POST_FIELDS = ("api_key", "jurisdiction_id", "service_code", "lat", "long", "address_string",
               "address_id", "email", "device_id", "account_id", "first_name", "last_name",
               "phone", "description", "media_url")  # fmt: skip
LIST_PARAMETERS = ("jurisdiction_id", "api_key", "service_request_id", "service_code",
                   "start_date", "end_date", "status")  # fmt: skip
ONE_PARAMETERS = ("jurisdiction_id", "api_key")
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
Key = Annotated[str | None, Header(alias="X-API-Key", max_length=200)]


async def open311_caller(request: Request, key: str | None) -> keys.Holder:
    """The holder of this API key if it may report (api.access); Forbidden (403, as the
    spec answers) without a valid one."""
    return await holder_allowed(request, key, "report")


def _format(fmt: str) -> str:
    if fmt not in open311.FORMATS:
        shown = fmt.replace("\x00", "")[:20]
        raise NotFound(f"format {shown!r} is not served: ask for .json or .xml")
    return fmt


def _parameters(request: Request, takes: tuple[str, ...]) -> dict[str, str]:
    unknown = [n for n in request.query_params if n not in takes]
    if unknown:
        raise InvalidInput(f"unknown query parameter {unknown[0][:40]!r}; {request.url.path} "
                           f"takes {', '.join(takes)}")  # fmt: skip
    values = dict(request.query_params)
    if len(values.get("jurisdiction_id", "")) > 200:
        raise InvalidInput("jurisdiction_id is longer than 200 characters")
    return values


async def _reader(
    request: Request, headers_key: str | None, values: dict[str, str]
) -> keys.Holder | None:
    """The caller of a GET when it sent a key of staff who handle incidents (they may read
    descriptions); Forbidden for a key that is not valid."""
    key = values.get("api_key") or headers_key
    if key is None:
        return None
    holder = await open311_caller(request, key)
    return holder if holder.may("handle_incidents") else None


def _list(text: str, name: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not all(items) or len(items) > MAX_IDS:
        raise InvalidInput(f"{name}: a comma-separated list of at most {MAX_IDS:,} values, "
                           "none empty")  # fmt: skip
    return items


# --- services -----------------------------------------------------------------------------


def _services(conn: psycopg.Connection) -> list[dict[str, Any]]:
    every = categories.list_categories(conn)
    by_code = {c.code: c for c in every}
    parents = {c.parent_code for c in every}
    listed = []
    for c in every:
        if c.code in parents:
            continue  # a group of services (the spec's group), not one to report under
        path, up = [], c.parent_code
        while up in by_code and len(path) < categories.MAX_DEPTH:
            path.insert(0, by_code[up].name)
            up = by_code[up].parent_code
        listed.append(open311.service(c, path[-1] if path else None, path))
    return listed


def _definition(conn: psycopg.Connection, code: str) -> dict[str, Any]:
    try:
        category = categories.get_category(conn, code)
    except NotFound:
        raise NotFound(f"service_code {code[:60]!r} is not a service: services.json lists "
                       "them") from None  # fmt: skip
    return {"service_code": category.code, "attributes": []}


@router.get("/discovery.{fmt}", dependencies=[Public],
            summary="Open311 service discovery (public)")  # fmt: skip
async def discovery(request: Request, fmt: str) -> Response:
    """Where this server's GeoReport v2 endpoint is and which formats it writes."""
    _parameters(request, ())
    base = base_url(request)
    document = {
        "changeset": "2024-01-01T00:00:00Z", "contact": "the city operation centre",
        "key_service": "ask the city operation centre for a key to post requests",
        "endpoints": [{"specification": SPECIFICATION, "url": f"{base}/open311/v2",
                       "changeset": "2024-01-01T00:00:00Z", "type": "production",
                       "formats": ["text/xml", "application/json"]}],
    }  # fmt: skip
    return render(document, _format(fmt), root="discovery", item="discovery")


@router.get("/v2/services.{fmt}", dependencies=[Public],
            summary="Open311 service list: the categories (public)")  # fmt: skip
async def services(request: Request, fmt: str) -> Response:
    """Each category a resident can report under (the groups are each service's
    ``group``): code, name, description with its SLA, no attributes (metadata false)."""
    fmt = _format(fmt)
    _parameters(request, ONE_PARAMETERS)
    listed = await with_connection(request, _services)
    return render(listed, fmt, root="services", item="service")


@router.get("/v2/services/{code:path}.{fmt}", dependencies=[Public],
            summary="Open311 service definition (public)")  # fmt: skip
async def service_definition(request: Request, code: str, fmt: str) -> Response:
    """The service's attributes: none, as our categories ask for none; 404 for an
    unknown service_code."""
    fmt = _format(fmt)
    _parameters(request, ONE_PARAMETERS)
    document = await with_connection(request, _definition, code)
    return render(document, fmt, root="service_definition", item="service_definition")


# --- service requests ---------------------------------------------------------------------


def _requests(conn: psycopg.Connection, *, reader: keys.Holder | None,
              statuses: list[str] | None = None, **filters: Any) -> list[dict[str, Any]]:  # fmt: skip
    """Service requests by the core's list filters, newest first; ``statuses`` (open,
    closed) as each request reads (a duplicate as the request it joined). Descriptions
    only for a ``reader`` who handles incidents, of the incidents within its scope."""
    descriptions = reader is not None
    wanted = None if statuses is None else open311.statuses_for(statuses)
    found = intake.list_incidents(conn, status=wanted, limit=PAGE, descriptions=descriptions,
                                  **filters)["incidents"]  # fmt: skip
    known = {v["id"]: v for v in found}
    pending = {v["duplicate_of"] for v in found if v["duplicate_of"]} - set(known)
    for _ in range(categories.MAX_DEPTH):  # a duplicate of a duplicate …: bounded
        if not pending:
            break
        more = intake.list_incidents(conn, ids=sorted(pending), limit=PAGE)["incidents"]
        known.update((v["id"], v) for v in more)
        pending = {v["duplicate_of"] for v in more if v["duplicate_of"]} - set(known)

    def follows(view: dict[str, Any]) -> dict[str, Any]:
        for _ in range(categories.MAX_DEPTH):
            if view["status"] != "duplicate" or view["duplicate_of"] not in known:
                break
            view = known[view["duplicate_of"]]
        return view

    pairs = [(v, follows(v)) for v in found]
    steps = intake.latest_steps(
        conn, sorted({v["id"] for v in found} | {f["id"] for _, f in pairs})
    )
    listed = []
    for view, target in pairs:
        sees = reader is not None and intake.seen_by(reader, view)
        answer = open311.request(view, target, steps[target["id"]]["step"],
                                 steps[view["id"]]["media_url"], description=sees)  # fmt: skip
        if statuses is None or answer["status"] in statuses:
            listed.append(answer)
    return listed


def _window(values: dict[str, str]) -> tuple[datetime, datetime | None]:
    """The spec's date window: start_date and end_date (inclusive), at most 90 days; by
    default the last 90 days."""
    try:
        start = values.get("start_date")
        end = values.get("end_date")
        since = None if start is None else open311.parse_datetime("start_date", start)
        until = None if end is None else open311.parse_datetime("end_date", end, end=True)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if since is not None and until is not None:
        if until < since:
            raise InvalidInput("end_date is before start_date")
        if until - since > SPAN:
            raise InvalidInput("start_date to end_date spans more than 90 days, the most one "
                               "query may: ask for the days in turns")  # fmt: skip
    elif since is not None:
        until = since + SPAN
    elif until is not None:
        since = until - SPAN
    else:
        since = datetime.now(UTC) - SPAN
    return since, None if until is None else until + timedelta(microseconds=1)


def _ids(text: str) -> list[int]:
    ids = []
    for item in _list(text, "service_request_id"):
        if not item.isdigit() or len(item) > 19 or not 0 < int(item) < 2**63:
            raise InvalidInput(f"service_request_id {item[:40]!r} is not a request id (a "
                               "whole number)")  # fmt: skip
        ids.append(int(item))
    return ids


@router.get("/v2/requests.{fmt}", dependencies=[Public],
            summary="Open311 service requests: the incidents, by filters (public)")  # fmt: skip
async def list_requests(request: Request, fmt: str, x_api_key: Key = None) -> Response:
    """By ``service_request_id`` (a comma list; it overrides the other filters), else by
    ``service_code`` (a comma list; a group's code takes the services under it),
    ``status`` (open, closed), ``start_date`` and ``end_date`` (W3C date-times, at most 90
    days apart; by default the last 90 days): the newest 1000, newest first."""
    fmt = _format(fmt)
    values = _parameters(request, LIST_PARAMETERS)
    reader = await _reader(request, x_api_key, values)
    filters: dict[str, Any]
    if "service_request_id" in values:
        filters = {"ids": _ids(values["service_request_id"])}
    else:
        since, until = _window(values)
        filters = {"since": since, "until": until}
        if "service_code" in values:
            filters["category"] = _list(values["service_code"], "service_code")
        if "status" in values:
            statuses = [s.lower() for s in _list(values["status"], "status")]
            wrong = [s for s in statuses if s not in open311.STATUSES]
            if wrong:
                raise InvalidInput(f"status {wrong[0][:40]!r} is not open or closed")
            filters["statuses"] = statuses
    try:
        listed = await with_connection(request, _requests, reader=reader, **filters)
    except InvalidInput as exc:  # a service_code that is no category
        if exc.option != "category":
            raise
        raise InvalidInput(f"service_code: {exc}; services.json lists the services") from None
    return render(listed, fmt, root="service_requests", item="request")


@router.get("/v2/requests/{request_id}.{fmt}", dependencies=[Public],
            summary="Open311 service request: one incident (public)")  # fmt: skip
async def get_request(request: Request, request_id: str, fmt: str,
                      x_api_key: Key = None) -> Response:  # fmt: skip
    """A list of the one request, as the spec answers; 404 for an unknown id."""
    fmt = _format(fmt)
    values = _parameters(request, ONE_PARAMETERS)
    reader = await _reader(request, x_api_key, values)
    shown = request_id.replace("\x00", "")[:40]
    if not request_id.isdigit() or len(request_id) > 19 or not 0 < int(request_id) < 2**63:
        raise NotFound(f"there is no service request {shown!r}: an id is a whole number")
    listed = await with_connection(request, _requests, reader=reader,
                               ids=[int(request_id)])  # fmt: skip
    if not listed:
        raise NotFound(f"there is no service request {shown}")
    return render(listed, fmt, root="service_requests", item="request")


@router.get("/v2/tokens/{token}.{fmt}", dependencies=[Public],
            summary="Open311 token: the service request it names (public)")  # fmt: skip
async def token_request(request: Request, token: str, fmt: str) -> Response:
    """``service_request_id`` and ``token``; 404 for an unknown token."""
    fmt = _format(fmt)
    _parameters(request, ONE_PARAMETERS)
    found = await with_connection(request, intake.id_of_token, token)
    return render([{"service_request_id": found, "token": token}], fmt,
                  root="service_requests", item="request")  # fmt: skip


# --- posting a request --------------------------------------------------------------------


async def _body(request: Request) -> bytes:
    limit = MAX_BODY_KB * 1024
    too_large = TooLarge(f"the request body is larger than {MAX_BODY_KB} KB: a service "
                         "request is a few fields (description at most 4,000 characters); "
                         "send media as a link in media_url")  # fmt: skip
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def _form(request: Request) -> list[tuple[str, str]]:
    """The form's fields in order, from a urlencoded or multipart body within its bound."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise InvalidInput("send the request as a form: Content-Type "
                           "application/x-www-form-urlencoded (or multipart/form-data)")  # fmt: skip
    body = await _body(request)
    if kind == "application/x-www-form-urlencoded":
        try:
            return parse_qsl(body.decode("ascii"), keep_blank_values=True, encoding="utf-8",
                             errors="strict", max_num_fields=MAX_FIELDS)  # fmt: skip
        except UnicodeDecodeError:
            raise InvalidInput("the form is not UTF-8 text, percent-encoded") from None
        except ValueError:
            raise InvalidInput(f"the form has more than {MAX_FIELDS} fields") from None

    async def once() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(request.headers, once(), max_files=0, max_fields=MAX_FIELDS,
                             max_part_size=MAX_BODY_KB * 1024)  # fmt: skip
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if "files" in str(exc):
            raise InvalidInput("this server takes no files: send a link to the media in "
                               "media_url") from None  # fmt: skip
        raise InvalidInput("the form cannot be read as multipart/form-data") from None
    fields = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):  # max_files=0 refuses files already; never kept
            raise InvalidInput("this server takes no files: send a link in media_url")
        fields.append((name, value))
    return fields


def _fields(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    """The spec's fields and the ``attribute[…]`` ones, each checked: known, once, no NUL."""
    values: dict[str, str] = {}
    attributes: dict[str, str] = {}
    for name, value in pairs:
        shown = name.replace("\x00", "")[:40]
        is_attribute = name.startswith("attribute[") and name.endswith("]")
        if name not in POST_FIELDS and not is_attribute:
            raise InvalidInput(f"unknown form field {shown!r}; a service request takes "
                               f"{', '.join(POST_FIELDS)} and attribute[…]")  # fmt: skip
        target = attributes if is_attribute else values
        if name in target:
            raise InvalidInput(f"form field {shown!r} is given more than once; give it once")
        if "\x00" in name or "\x00" in value:
            raise InvalidInput(f"form field {shown!r} holds a NUL character (\\0)")
        target[name] = value
    return values, attributes


def _media_url(value: str | None) -> str | None:
    if not value:
        return None
    if not value.startswith(("http://", "https://")) or any(c.isspace() for c in value):
        raise InvalidInput("media_url must be a link, http:// or https://, without spaces")
    if len(value) > intake.MAX_NOTE:
        raise InvalidInput(f"media_url is longer than {intake.MAX_NOTE:,} characters")
    return value


def _post(conn: psycopg.Connection, *, actor: str, channel: str, media_url: str | None,
          received: str, **report: Any) -> intake.Incident:  # fmt: skip
    """Intake, and what came with the report on the timeline, in one transaction."""
    with conn.transaction():
        incident = intake.report(conn, channel=channel, actor=actor, **report)
        if not incident.replayed:
            if media_url is not None:  # recorded, never fetched
                intake.add_note(conn, incident.id, "media_attached", media_url, actor=actor)
            if received:
                intake.add_note(conn, incident.id, "received_from", received, actor=actor)
    return incident


@router.post("/v2/requests.{fmt}", dependencies=[Depends(CheckedInRoute("report"))], status_code=201,
             summary="Open311 post a service request: report an incident (key)")  # fmt: skip
async def post_request(
    request: Request,
    fmt: str,
    x_api_key: Key = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> Response:
    """A form of the spec's fields: ``service_code``, ``lat`` and ``long`` (WGS 84; this
    server needs the point, an address alone is not enough), ``address_string``,
    ``description``, ``email``, ``phone``, ``first_name``, ``last_name``, ``media_url``
    (recorded, never fetched) …, with ``api_key``. 201 with ``service_request_id`` (the
    incident's id, its own also when it joined an earlier report of the same problem:
    it names this report, whose token it answers), ``token``, ``service_notice`` and
    ``account_id``."""
    fmt = _format(fmt)
    query = _parameters(request, ONE_PARAMETERS)
    values, attributes = _fields(await _form(request))
    caller = await open311_caller(request,
                                  values.get("api_key") or query.get("api_key") or x_api_key)  # fmt: skip
    # A resident app's or a grid inspector's key posts through its own channel; the others
    # (external systems, the hotline's systems) as an external system.
    channel = keys.channel_for(caller, None) if caller.role in keys.ROLE_CHANNELS else CHANNEL
    code = values.get("service_code")
    if not code:
        raise InvalidInput("service_code is required: services.json lists the services")
    if not values.get("lat") or not values.get("long"):
        raise InvalidInput("lat and long are required: this server places every request on "
                           "the map and does not look up address_string or address_id alone")  # fmt: skip
    try:
        lat = open311.parse_coordinate("lat", values["lat"], 90)
        lon = open311.parse_coordinate("long", values["long"], 180)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    name = " ".join(values[k].strip() for k in ("first_name", "last_name") if values.get(k))
    reporter = {"name": name, "phone": values.get("phone"), "email": values.get("email")}
    received = "; ".join(
        f"{k}={v[:200]}"
        for k, v in [*((k, values.get(k) or "") for k in ("account_id", "device_id",
                                                           "address_id", "jurisdiction_id")),
                     *attributes.items()]
        if v
    )[: intake.MAX_NOTE]  # fmt: skip
    try:
        incident = await with_connection(
            request, _post, actor=caller.name, channel=channel, media_url=_media_url(values.get("media_url")),
            received=received, category_code=code, lon=lon, lat=lat,
            description=values.get("description"), address=values.get("address_string"),
            reporter={k: v for k, v in reporter.items() if v}, idempotency_key=idempotency_key,
            idempotency_scope=caller.name,
        )  # fmt: skip
    except InvalidInput as exc:
        if exc.option == "category":
            raise InvalidInput(f"service_code {code[:60]!r} is not a service: services.json "
                               "lists them") from None  # fmt: skip
        if exc.option == "location":
            raise InvalidInput(f"lat, long: {exc}".replace("location: ", "")) from None
        raise
    view = incident.view
    joined = view["duplicate_of"]
    answer = [{"service_request_id": incident.id, "token": view["tracking_token"],
               "service_notice": open311.service_notice(view, joined),
               "account_id": values.get("account_id") or None}]  # fmt: skip
    response = render(answer, fmt, root="service_requests", item="request",
                      status_code=200 if incident.replayed else 201)  # fmt: skip
    response.headers["Location"] = f"/open311/v2/requests/{incident.id}.{fmt}"
    return response
