"""Open311 GeoReport v2 (wiki.open311.org/GeoReport_v2) as a format: how our categories and
incidents read as services and service requests, and how answers and errors are written
in JSON and XML. Pure: no data base, no HTTP routing (api/routes/open311.py serves it).

Mappings, decided here once:

- a service is a category: ``service_code`` its code, ``group`` its parent's name;
- ``service_request_id`` is the incident's id, ``token`` its tracking token;
- ``status``: ``open`` while the loop runs (reported, dispatched, accepted, in progress),
  ``closed`` when the work is over for the resident (resolved, closed, cancelled, not our
  duty). A duplicate (fused at intake or marked by staff) has no work of its own: it
  reads as the request it joined, so a resident's report of a problem still being fixed
  does not show ``closed``;
- ``status_notes`` says the latest step of the loop in words made here, never a person's
  note or name (notes are staff's);
- ``agency_responsible`` is the unit's name, ``expected_datetime`` the resolution due time.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response

PREFIX = "/open311/"
FORMATS = ("json", "xml")
OPEN = frozenset({"reported", "dispatched", "accepted", "in_progress"})
CLOSED = frozenset({"resolved", "closed", "cancelled", "not_our_duty"})
STATUSES = ("open", "closed")
REQUEST_FIELDS = ("service_request_id", "status", "status_notes", "service_name",
                  "service_code", "description", "agency_responsible", "service_notice",
                  "requested_datetime", "updated_datetime", "expected_datetime", "address",
                  "address_id", "zipcode", "lat", "long", "media_url")  # fmt: skip
# The latest step of the loop, as a status note (timeline actions, twin.incidents.loop).
STEP_WORDS = {
    "reported": "received, waiting for a dispatcher",
    "dispatched": "dispatched to the unit responsible",
    "escalated": "escalated to the centre, which dispatches it",
    "reassigned": "reassigned to another unit",
    "accepted": "accepted by the unit responsible",
    "started": "work in progress",
    "resolved": "resolved, waiting for verification",
    "closed": "closed: the work was verified",
    "sent_back": "back with the dispatcher, to be dispatched anew",
    "reopened": "reopened: the work did not hold",
    "cancelled": "cancelled",
    "marked_duplicate": "the same problem as another request",
    "not_our_duty": "not a matter for a public body",
    "supervised": "overdue: supervised by the centre",
    "fused": "another report of the same problem joined this request",
}
# The joined request's steps, as a duplicate that follows it reads them: its own joining
# is the fused step there ("another report joined this request" would say it of itself).
FOLLOWED_WORDS = {**STEP_WORDS, "fused": "this report joined it"}
# XML 1.0 cannot hold these characters at all, escaped or not.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def open311_status(status: str) -> str:
    """``open`` or ``closed`` for one of our statuses (a duplicate: see the module)."""
    return "open" if status in OPEN else "closed"


def statuses_for(wanted: Sequence[str]) -> list[str]:
    """Our statuses that may read as any of ``wanted`` (open, closed): duplicates always,
    as they read as the request they joined."""
    ours = {"duplicate"}
    for status in wanted:
        ours |= OPEN if status == "open" else CLOSED
    return sorted(ours)


def w3c(when: datetime | None) -> str | None:
    """A date-time in the W3C profile of ISO 8601, with its offset (UTC as Z)."""
    if when is None:
        return None
    text = when.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def service(category: Any, parent_name: str | None, keywords: Sequence[str]) -> dict[str, Any]:
    """A category as a service of the service list."""
    hours = f"response within {category.response_hours:g} h, resolution within " \
            f"{category.resolve_hours:g} h"  # fmt: skip
    return {
        "service_code": category.code, "service_name": category.name,
        "description": f"{' > '.join([*keywords, category.name])} ({hours})",
        "metadata": False, "type": "realtime", "keywords": ", ".join(keywords),
        "group": parent_name or "",
    }  # fmt: skip


def status_notes(step: Mapping[str, Any] | None, joined: int | None) -> str:
    """The latest step in words; for a duplicate, which request it joined and how that
    one stands."""
    said = STEP_WORDS if joined is None else FOLLOWED_WORDS
    words = "" if step is None else said.get(step["action"], step["action"].replace("_", " "))
    if joined is not None:
        return f"the same problem as request {joined}, which it follows: {words}".rstrip(": ")
    return words


def service_notice(view: Mapping[str, Any], joined: int | None = None) -> str:
    """What happens next, for the reporter: who has it and when it is due."""
    if joined is not None:
        return f"already reported as request {joined}: this request follows its progress"
    if view.get("outside"):
        return "outside every jurisdiction of the city: a dispatcher decides who takes it"
    unit = view.get("unit")
    due = w3c((view.get("due_at") or {}).get("resolve"))
    if unit is None:
        return "waiting for a dispatcher"
    return f"with {unit['name']}" + (f", to be resolved by {due}" if due else "")


def request(view: Mapping[str, Any], follows: Mapping[str, Any], step: Mapping[str, Any] | None,
            media_url: str | None, *, description: bool) -> dict[str, Any]:  # fmt: skip
    """An incident as a service request. ``view`` is the incident (a list's or ``get``'s,
    never the reporter), ``follows`` the incident whose progress it shows (itself, or the
    one a duplicate joined), ``step`` the latest step of ``follows``. ``description`` only
    for callers who may read a resident's text."""
    joined = follows["id"] if follows["id"] != view["id"] else None
    unit = follows.get("unit")
    return {
        "service_request_id": view["id"],
        "status": open311_status(follows["status"]),
        "status_notes": status_notes(step, joined),
        "service_name": view["category"]["name"],
        "service_code": view["category"]["code"],
        "description": (view.get("description") or "") if description else "",
        "agency_responsible": None if unit is None else unit["name"],
        "service_notice": service_notice(follows, joined),
        "requested_datetime": w3c(view["reported_at"]),
        "updated_datetime": w3c(max(view["updated_at"], follows["updated_at"])),
        "expected_datetime": w3c(follows["due_at"]["resolve"]),
        "address": view.get("address") or "",
        "address_id": None,
        "zipcode": None,
        "lat": view["location"]["lat"],
        "long": view["location"]["lon"],
        "media_url": media_url,
    }


def parse_datetime(name: str, text: str, *, end: bool = False) -> datetime:
    """A W3C date-time (``1994-11-05T13:15:30Z``, ``…-05:00``) or a date (UTC: its start,
    or with ``end`` its last instant); ValueError saying what is wrong."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return day.replace(hour=23, minute=59, second=59, microsecond=999999) if end else day
    form = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})"
    if not re.fullmatch(form, text):
        raise ValueError(
            f"{name} {text[:40]!r} is not a W3C date-time with its time zone, e.g. "
            "2024-05-01T08:00:00+08:00 or 2024-05-01T00:00:00Z"
        )
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} {text[:40]!r} is not a date on the calendar") from None


def parse_coordinate(name: str, text: str, bound: float) -> float:
    """A latitude or longitude in degrees (WGS 84) from a form field; ValueError naming it."""
    shown = text.replace("\x00", "")[:40]
    if not re.fullmatch(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*", text):
        raise ValueError(f"{name} {shown!r} is not a number in degrees")
    value = float(text)
    if not math.isfinite(value) or abs(value) > bound:
        raise ValueError(
            f"{name} {shown} is not a {name} in degrees (from -{bound:g} to {bound:g})"
        )
    return value


# --- writing -----------------------------------------------------------------------------


def _xml_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    # ElementTree escapes &, < and >; characters XML cannot hold become U+FFFD.
    return _NOT_XML.sub("\ufffd", str(value))


# A list's elements are named by the spec in the singular of the list's name.
_SINGULAR = {"attributes": "attribute", "values": "value", "endpoints": "endpoint",
             "formats": "format"}  # fmt: skip


def _element(parent: ET.Element, name: str, value: Any) -> None:
    child = ET.SubElement(parent, name)
    if isinstance(value, list):
        for entry in value:
            _element(child, _SINGULAR.get(name, "item"), entry)
    elif isinstance(value, Mapping):
        _fill(child, value)
    else:
        child.text = _xml_text(value)


def _fill(element: ET.Element, values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        _element(element, name, value)


def render(content: Any, fmt: str, *, root: str, item: str, status_code: int = 200) -> Response:
    """``content`` (a list of objects, or one object) as the spec writes it: JSON as is,
    XML as ``<root><item>…</item>…</root>`` (or ``<root>…</root>`` for one object), UTF-8
    with its declaration."""
    if fmt == "json":
        return Response(orjson.dumps(content, default=str), status_code=status_code,
                        media_type="application/json; charset=utf-8")  # fmt: skip
    top = ET.Element(root)
    if isinstance(content, list):
        for entry in content:
            _fill(ET.SubElement(top, item), entry)
    else:
        _fill(top, content)
    body = ET.tostring(top, encoding="UTF-8", xml_declaration=True)
    return Response(body, status_code=status_code, media_type="text/xml; charset=utf-8")


def format_of(path: str) -> str:
    """The format a path under /open311/ asks for: json for ``….json``, else XML (the
    spec's required format)."""
    return "json" if path.rstrip("/").endswith(".json") else "xml"


def error_response(status: int, description: str, path: str) -> Response:
    """An error as the spec writes it: ``[{code, description}]`` or
    ``<errors><error><code/><description/></error></errors>``, with the HTTP status."""
    errors = [{"code": status, "description": description}]
    return render(errors, format_of(path), root="errors", item="error", status_code=status)
