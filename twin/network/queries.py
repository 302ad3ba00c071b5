"""The network questions as the API and the command line ask them: a request (plain
values, already of the right types) in, an answer (JSON-ready) out.

Where a request names a place, it is one of ``{"pipe": {"id": N}}``, ``{"pipe":
{"source_id": S, "dataset": D}}`` (the dataset only when the source id is in several),
``{"node": …}`` (the same shapes) or ``{"point": {"lon": x, "lat": y}}`` (CRS84; the nearest
pipe within 200 m).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg

from twin.errors import InvalidInput
from twin.network import check, isolation, trace
from twin.network.topology import Topology, distinct, topology
from twin.spatial import check_point

PLACES = ("pipe", "node", "point")


def _place(
    t: Topology, request: dict[str, Any], what: str, *, label: str | None = None
) -> tuple[int | None, int | None, dict]:
    """(piece, vertex, description) of the place ``request[what]`` names; messages name
    its fields under ``label`` (``what`` unless given; "" for the body itself)."""
    place = request.get(what)
    prefix = what if label is None else label
    what = prefix or "the body"
    if not isinstance(place, dict) or len([k for k in PLACES if k in place]) != 1:
        raise InvalidInput(f"{what} must name one of: a pipe, a node or a point, e.g. "
                           f'{{"pipe": {{"id": 12}}}}', option=what)  # fmt: skip
    if "point" in place:
        lon, lat = place["point"]["lon"], place["point"]["lat"]
        check_point(lon, lat)
        piece, distance = t.nearest_piece(lon, lat, _field(prefix, "point"))
        p = int(t.piece_pipe[piece])
        return piece, None, {"point": {"lon": lon, "lat": lat}, "pipe": _pipe(t, p),
                             "distance_m": round(distance, 2), "at": t.on_pipe(p, lon, lat)}  # fmt: skip
    if "pipe" in place:
        p = t.pipe_index(place["pipe"], _field(prefix, "pipe"))
        own = int(t.pipe_own_piece[p])
        middle = (t.piece_from[own] + t.piece_to[own]) / 2
        return own, None, {"pipe": _pipe(t, p), "at": t.along_pipe(p, middle)}
    n = t.node_index(place["node"], _field(prefix, "node"))
    vertex = int(t.node_vertex[n])
    if vertex < 0:
        raise InvalidInput(
            f"{_field(prefix, 'node')}: node {t.node_id[n]} is not on the {t.network} network: the nearest "
            f"pipe is {t.node_gap_m[n]:.1f} m away (the snapping tolerance is {t.snap_m} m)",
            option=_field(prefix, "node"),
        )
    return None, vertex, {"node": {"id": int(t.node_id[n]), "source_id": t.node_source_id[n],
                                   "dataset": t.node_dataset[n], "kind": t.node_kind[n]}}  # fmt: skip


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _pipe(t: Topology, p: int) -> dict[str, Any]:
    return {"id": int(t.pipe_id[p]), "source_id": t.pipe_source_id[p],
            "dataset": t.pipe_dataset[p], "owner_unit": t.pipe_owner[p]}  # fmt: skip


def run_isolation(
    conn: psycopg.Connection,
    network: str,
    request: dict[str, Any],
    *,
    snap_m: float,
    service_m: float,
) -> dict[str, Any]:
    """Isolate a burst: ``request`` names it (``pipe`` or ``point``) and may list
    ``failed_valves`` (valves that will not close in this run)."""
    t = topology(conn, network, snap_m)
    if "node" in request:
        raise InvalidInput("a burst is on a pipe: name the pipe or a point, not a node",
                           option="node")  # fmt: skip
    piece, _, burst = _place(t, {"burst": request}, "burst", label="")
    assert piece is not None
    failed = isolation.failed_valves(t, request.get("failed_valves") or [])
    result = isolation.isolate(t, piece, failed)
    answer = isolation.describe(conn, t, result, service_m=service_m, burst=burst)
    answer["map"] = isolation_map(t, result, answer)
    return answer


def isolation_map(t: Topology, result: isolation.Isolation, answer: dict[str, Any]) -> dict:
    """The isolation as GeoJSON for a map: isolated pipes (their isolated parts), valves to
    close, and the buildings affected (as points)."""
    features: list[dict[str, Any]] = []
    pieces = result.isolated_pieces[: isolation.MAX_LISTED]
    for e, geometry in zip(pieces.tolist(), t.piece_geometry(pieces), strict=True):
        p = int(t.piece_pipe[e])
        features.append({"type": "Feature", "geometry": geometry,
                         "properties": {"role": "isolated", "layer": "pipes", **_pipe(t, p)}})  # fmt: skip
    for role, rows in (("close", answer["valves"]), ("closed", answer["valves_closed_already"])):
        for row in rows:
            features.append({"type": "Feature",
                             "geometry": {"type": "Point", "coordinates": [row["lon"], row["lat"]]},
                             "properties": {"role": role, "layer": "pipe_nodes", "id": row["id"],
                                            "source_id": row["source_id"]}})  # fmt: skip
    for row in answer["buildings"]:
        features.append({"type": "Feature",
                         "geometry": {"type": "Point", "coordinates": [row["lon"], row["lat"]]},
                         "properties": {"role": f"building_{row['part']}", "layer": "buildings",
                                        "id": row["id"], "sensitive": row["sensitive"]}})  # fmt: skip
    return {"type": "FeatureCollection", "features": features}


def run_trace(
    conn: psycopg.Connection,
    network: str,
    request: dict[str, Any],
    *,
    snap_m: float,
    limit: int = trace.MAX_FEATURES,
) -> dict[str, Any]:
    """A trace: ``request["trace"]`` (connected, upstream, downstream or path) from
    ``request["from"]`` (and, for a path, to ``request["to"]``)."""
    way = trace.check_trace(request.get("trace", "connected"))
    t = topology(conn, network, snap_m)
    piece, vertex, start = _place(t, request, "from")
    answer: dict[str, Any] = {"type": "FeatureCollection", "network": network, "trace": way,
                              "from": start}  # fmt: skip
    if way == "path":
        if "to" not in request:
            raise InvalidInput('a path needs "to": where the path ends', option="to")
        goal_piece, goal_vertex, goal = _place(t, request, "to")
        answer["to"] = goal
        pieces = _path(t, piece, vertex, goal_piece, goal_vertex)
        if pieces is None:
            answer.update(features=[], found=False, total_length_m=None,
                          message="no way along the pipes joins the two places (the network is "
                                  "in parts, or a closed valve stands between)")  # fmt: skip
            return answer
        answer["found"] = True
    else:
        if "to" in request:
            raise InvalidInput(f'"to" is for a path; a {way} trace starts at "from" alone',
                               option="to")  # fmt: skip
        pieces = trace.reach(t, trace.start_vertices(t, piece, vertex, way), way)
        if piece is not None and way != "connected":
            pieces = distinct(np.append(pieces, piece), len(t.piece_pipe))
    found, total, count = trace.features(t, pieces, limit=limit)
    answer.update(features=found, total_length_m=total, pipe_count=len(distinct(t.piece_pipe[pieces], len(t.pipe_id))),
                  numberMatched=count, numberReturned=len(found), truncated=count > len(found))  # fmt: skip
    warnings = []
    if way in ("upstream", "downstream"):
        if unknown := trace.unknown_directions(t):
            warnings.append(f"{unknown} pieces of pipe have no known flow direction and were "
                            "taken both ways")  # fmt: skip
        if both := trace.both_ways(t):
            warnings.append(f"{both} pieces of pipe flow both ways (flow_direction both, as "
                            "looped mains do): the trace passes them either way, so it may "
                            "reach most of the network")  # fmt: skip
    if warnings:
        answer["warnings"] = warnings
    return answer


def _path(
    t: Topology,
    piece: int | None,
    vertex: int | None,
    goal_piece: int | None,
    goal_vertex: int | None,
) -> np.ndarray | None:
    """The shortest way between two places (pieces or vertices): tried from each end of a
    piece to the nearer end of the other, the pieces themselves included."""
    u, v = trace.graph_ends(t)  # closed valves split: a path never passes one
    starts = [vertex] if vertex is not None else [int(u[piece]), int(v[piece])]
    goals = [goal_vertex] if goal_vertex is not None else \
        [int(u[goal_piece]), int(v[goal_piece])]  # fmt: skip
    # Most ways along pipes are under three times the crow's flight: look that far first.
    here = t.vertex_xy[t.piece_u[piece]] if vertex is None else t.vertex_xy[vertex]
    there = t.vertex_xy[t.piece_u[goal_piece]] if goal_vertex is None else t.vertex_xy[goal_vertex]
    crow = float(np.hypot(*(here - there)))
    best = trace.path(t, starts, goals, limit=3 * crow + 500)
    if best is None:
        best = trace.path(t, starts, goals)
    if best is None:
        return None
    ends = [p for p in (piece, goal_piece) if p is not None]
    return np.unique(np.concatenate([best, np.array(ends, dtype=np.int64)]))


def run_check(
    conn: psycopg.Connection, network: str, *, snap_m: float, near_miss_m: float
) -> dict[str, Any]:
    """The connectivity report of ``network``."""
    return check.connectivity(topology(conn, network, snap_m), near_miss_m)
