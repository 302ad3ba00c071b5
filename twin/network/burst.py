"""The burst workflow (爆管处置): one call turns a valve isolation into action.

It makes an incident of the network's pipe-burst category at the burst (attached and
dispatched by the incidents' rules; given to the burst pipe's owner when the rules chose
another unit), a work order for each valve to close, to the valve's owner, and the notice
list of the buildings that lose supply, sensitive sites (hospitals, schools, homes for the
elderly) first. The burst is kept open with its isolation until it is closed, so isolations
open at the same time that share valves or pipes are reported, each to the other.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from twin import spatial
from twin.errors import Conflict, InvalidInput, NotFound
from twin.incidents import categories, intake
from twin.network import queries
from twin.network.topology import check_network

# The demo's categories (GB/T 30428.2's 事件 class 管道爆裂 and its kinds); a city with other
# codes names its own in the request.
BURST_CATEGORIES = {"water": "SJ040101", "drainage": "SJ040102", "sewage": "SJ040103",
                    "gas": "SJ040104"}  # fmt: skip
BURST_CATEGORY = "SJ0401"  # any other network's burst
VALVE_CATEGORY = "SJ040105"  # 关阀停水作业: closing a valve for an isolation
CHANNEL = "external_system"  # the pipe network system reports it
MAX_NOTE = 2000
# A crew finds a burst or a valve in the street by the nearest building's address.
ADDRESS_WITHIN_M = 150.0


def _category(conn: psycopg.Connection, code: str, what: str) -> str:
    try:
        categories.get_category(conn, code)
    except NotFound:
        raise InvalidInput(f"{what} {code!r} is not an incident category (GET /categories lists "
                           f"them); name the city's own with \"{what}\"", option=what) from None  # fmt: skip
    return code


def address_near(conn: psycopg.Connection, lon: float, lat: float) -> str | None:
    """ "near <address>" of the nearest building with an address within
    ``ADDRESS_WITHIN_M`` of the point, for an incident the pipe network reports (it has
    none of its own); None when no building with one is that near."""
    found = spatial.nearest(conn, lon, lat, layers=["buildings"], k=5,
                            max_distance_m=ADDRESS_WITHIN_M, columns=("address",))  # fmt: skip
    for building in found["buildings"]:
        if address := (building["properties"] or {}).get("address"):
            return f"near {address}"[: intake.MAX_ADDRESS]
    return None


def _households(count: int | None) -> str:
    return "households not known" if count is None else f"{count} households"


def _to_owner(
    conn: psycopg.Connection, incident: dict[str, Any], owner: str | None, why: str, actor: str
) -> dict[str, Any]:
    """The incident, given to ``owner`` when the rules gave it to another unit (or none)."""
    if not owner or incident["status"] not in ("reported", "dispatched"):
        return incident
    if (incident.get("unit") or {}).get("code") == owner:
        return incident
    try:
        return intake.dispatch_manually(conn, incident["id"], owner, actor=actor, note=why,
                                        expected_version=incident["version"])  # fmt: skip
    except InvalidInput:  # an owner the unit list does not know: the rules' choice stands
        return incident


def open_burst(
    conn: psycopg.Connection,
    network: str,
    request: dict[str, Any],
    *,
    snap_m: float,
    service_m: float,
    actor: str,
    idempotency_key: str | None = None,
    shown_key: str | None = None,
) -> dict[str, Any]:
    """Isolate the burst ``request`` names (as ``queries.run_isolation`` reads it, plus
    optional ``note``, ``category`` and ``valve_category``) and turn it into an incident,
    valve work orders and a notice list, in one transaction. With ``idempotency_key``: the
    same key and request again answer the burst opened already; another request Conflict
    (naming ``shown_key``, the key as the caller gave it, when the stored one is scoped)."""
    check_network(network)
    note = intake._text("note", request.get("note"), MAX_NOTE)
    digest = intake._payload_hash({"network": network, "request": request})
    if idempotency_key is not None:
        held = conn.execute(
            "SELECT id, payload_hash FROM network_bursts WHERE idempotency_key = %s",
            (idempotency_key,),
        ).fetchone()
        if held is not None:
            if held[1] != digest:
                raise Conflict(f"Idempotency-Key {shown_key or idempotency_key!r} was used for another burst "
                               f"({held[0]}): use a new key for a new burst")  # fmt: skip
            return {**get_burst(conn, held[0]), "replayed": True}
    burst_category = _category(conn, request.get("category")
                               or BURST_CATEGORIES.get(network, BURST_CATEGORY), "category")  # fmt: skip
    valve_category = _category(conn, request.get("valve_category") or VALVE_CATEGORY,
                               "valve_category")  # fmt: skip
    place = {k: v for k, v in request.items() if k in ("pipe", "point", "failed_valves")}
    isolation = queries.run_isolation(conn, network, place, snap_m=snap_m, service_m=service_m)
    burst = isolation["burst"]
    lon, lat = burst["at"]
    pipe = burst["pipe"]
    burst["owner_unit"] = pipe.get("owner_unit")
    with conn.transaction():
        description = (
            f"{network} pipe {pipe['source_id'] or pipe['id']} burst: close "
            f"{len(isolation['valves'])} valves; {isolation['building_count']} buildings "
            f"({_households(isolation['households'])}, {isolation['sensitive_sites']} sensitive "
            "sites) lose supply" + (f". {note}" if note else "")
        )
        incident = intake.report(conn, category_code=burst_category, channel=CHANNEL, lon=lon,
                                 lat=lat, description=description[:intake.MAX_DESCRIPTION],
                                 address=address_near(conn, lon, lat), actor=actor).view  # fmt: skip
        incident = _to_owner(conn, incident, burst.get("owner_unit"),
                             "the burst pipe's owner answers for it", actor)  # fmt: skip
        orders = []
        for valve in isolation["valves"]:
            order = intake.report(
                conn, category_code=valve_category, channel=CHANNEL, lon=valve["lon"],
                lat=valve["lat"], address=address_near(conn, valve["lon"], valve["lat"]),
                actor=actor,
                description=f"close valve {valve['source_id'] or valve['id']} to isolate the "
                            f"burst of incident {incident['id']} ({network} pipe "
                            f"{pipe['source_id'] or pipe['id']})",
            ).view  # fmt: skip
            order = _to_owner(conn, order, valve.get("owner_unit"),
                              "the valve's owner operates it", actor)  # fmt: skip
            orders.append({"incident_id": order["id"], "valve": valve["id"],
                           "valve_source_id": valve["source_id"], "status": order["status"],
                           "unit": order.get("unit"), "duplicate_of": order.get("duplicate_of")})  # fmt: skip
        valve_ids = [v["id"] for v in isolation["valves"]]
        pipe_ids = [p["id"] for p in isolation["isolated_pipes"]]
        overlapping = _overlapping(conn, network, valve_ids, pipe_ids)
        row = conn.execute(
            """
            INSERT INTO network_bursts (network, incident_id, work_order_ids, pipe_id, valve_ids,
                isolated_pipe_ids, answer, idempotency_key, payload_hash, created_by, geom)
            VALUES (%(network)s, %(incident)s, %(orders)s, %(pipe)s, %(valves)s, %(pipes)s,
                    %(answer)s, %(key)s, %(digest)s, %(actor)s,
                    ST_SetSRID(ST_GeomFromGeoJSON(%(geometry)s), 4326))
            RETURNING id
            """,
            {"network": network, "incident": incident["id"],
             "orders": [o["incident_id"] for o in orders], "pipe": pipe["id"],
             "valves": valve_ids, "pipes": pipe_ids,
             "answer": Jsonb({"isolation": isolation, "work_orders": orders}),
             "key": idempotency_key, "digest": digest if idempotency_key else None,
             "actor": actor, "geometry": _isolated_geometry(isolation)},
        ).fetchone()  # fmt: skip
        assert row is not None
    return {
        "id": int(row[0]),
        "status": "open",
        "network": network,
        "incident": incident,
        "work_orders": orders,
        "notices": notices(isolation),
        "overlapping": overlapping,
        "isolation": isolation,
    }


def _isolated_geometry(isolation: dict[str, Any]) -> str | None:
    lines = [f["geometry"] for f in isolation["map"]["features"]
             if f["properties"]["role"] == "isolated"]  # fmt: skip
    if not lines:
        return None
    return json.dumps({"type": "GeometryCollection", "geometries": lines})


def notices(isolation: dict[str, Any]) -> list[dict[str, Any]]:
    """Whom to tell: the buildings that lose supply, sensitive sites first (the isolation
    orders them so), each with its address, households where known, and jurisdictions."""
    return [
        {"building": b["id"], "source_id": b["source_id"], "name": b["name"],
         "address": b["address"], "use": b["use"], "households": b["households"],
         "sensitive": b["sensitive"], "part": b["part"], "jurisdictions": b["jurisdictions"]}
        for b in isolation["buildings"]
    ]  # fmt: skip


def _overlapping(
    conn: psycopg.Connection, network: str, valves: list[int], pipes: list[int], *,
    not_id: int | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The open bursts of ``network`` that share a valve or an isolated pipe."""
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(
            """
            SELECT id, incident_id,
                   ARRAY(SELECT unnest(valve_ids) INTERSECT SELECT unnest(%(valves)s::bigint[])
                         ORDER BY 1) AS shared_valves,
                   ARRAY(SELECT unnest(isolated_pipe_ids)
                         INTERSECT SELECT unnest(%(pipes)s::bigint[]) ORDER BY 1) AS shared_pipes
            FROM network_bursts
            WHERE network = %(network)s AND status = 'open' AND id IS DISTINCT FROM %(not_id)s
              AND (valve_ids && %(valves)s::bigint[] OR isolated_pipe_ids && %(pipes)s::bigint[])
            ORDER BY id
            """,
            {"network": network, "valves": valves, "pipes": pipes, "not_id": not_id},
        ))  # fmt: skip


def get_burst(conn: psycopg.Connection, burst_id: int) -> dict[str, Any]:
    """A burst as ``open_burst`` answered it, with its status and the open bursts it
    overlaps now."""
    intake._check_id(burst_id)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM network_bursts WHERE id = %s", (burst_id,)).fetchone()
    if row is None:
        raise NotFound(f"no burst {burst_id}")
    isolation = row["answer"].get("isolation", {})
    return {
        "id": row["id"],
        "status": row["status"],
        "network": row["network"],
        "incident": intake.get(conn, row["incident_id"]),
        "work_orders": row["answer"].get("work_orders", []),
        "notices": notices(isolation) if isolation else [],
        "overlapping": _overlapping(conn, row["network"], row["valve_ids"],
                                    row["isolated_pipe_ids"], not_id=row["id"])
        if row["status"] == "open" else [],
        "isolation": isolation,
        "created_by": row["created_by"],
        "created_at": row["created_at"].isoformat(),
        "closed_at": row["closed_at"].isoformat() if row["closed_at"] else None,
        "closed_by": row["closed_by"],
        "close_note": row["close_note"],
    }  # fmt: skip


def list_bursts(
    conn: psycopg.Connection, *, network: str | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    """The bursts, newest first: id, network, status, incident, valves and pipes counts."""
    if network is not None:
        check_network(network)
    if status is not None and status not in ("open", "closed"):
        raise InvalidInput(f"status must be open or closed, not {status!r}", option="status")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            SELECT id, network, status, incident_id, pipe_id, cardinality(valve_ids) AS valves,
                   cardinality(isolated_pipe_ids) AS isolated_pipes, created_at, closed_at,
                   closed_by
            FROM network_bursts
            WHERE (%(network)s::text IS NULL OR network = %(network)s)
              AND (%(status)s::text IS NULL OR status = %(status)s)
            ORDER BY id DESC LIMIT 1000
            """,
            {"network": network, "status": status},
        ).fetchall()
    for row in rows:
        row["created_at"] = row["created_at"].isoformat()
        row["closed_at"] = row["closed_at"].isoformat() if row["closed_at"] else None
    return rows


def close_burst(
    conn: psycopg.Connection, burst_id: int, *, actor: str, note: str | None = None
) -> dict[str, Any]:
    """Close a burst (the pipe is mended, the valves open again): it no longer overlaps
    other isolations; who closed it (``actor``) and their ``note`` are kept with it.
    Conflict when it is closed already."""
    intake._check_id(burst_id)
    note = intake._text("note", note, MAX_NOTE) or None
    with conn.transaction():
        row = conn.execute(
            "UPDATE network_bursts SET status = 'closed', closed_at = now(), closed_by = %s,"
            " close_note = %s WHERE id = %s AND status = 'open' RETURNING id",
            (actor, note, burst_id),
        ).fetchone()
        if row is None:
            get_burst(conn, burst_id)  # NotFound for an unknown burst
            raise Conflict(f"burst {burst_id} is closed already")
    return get_burst(conn, burst_id)
