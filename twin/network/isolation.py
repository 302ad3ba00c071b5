"""Valve isolation (关阀分析): which valves to close for a burst, what goes dry, who is
affected.

The burst's part is its valve segment (twin.network.topology): the pieces reachable from
the burst without passing an operable valve. Its boundary valves are the ones to close;
valves closed already bound it and need no work; a valve that will not close (marked
inoperable, or failed in this run) lets the isolation grow to the next ring, as Giswater's
mincut and ArcGIS's isolation trace do. Once those valves are shut, every segment that loses
all its sources is cut off. A gravity network (drainage, sewage) has no sources to lose: what
the burst cuts off there is what flows into it, upstream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import shapely
from psycopg.rows import dict_row
from scipy import sparse
from scipy.sparse import csgraph

from twin.errors import InvalidInput
from twin.network.topology import PRESSURE_NETWORKS, Topology, distinct, fed_segments

SENSITIVE_USES = ("health", "education", "hospital", "school", "kindergarten", "elderly_care")
# Words in a building's name that mark a sensitive site whatever its use says.
SENSITIVE_WORDS = ("医院", "卫生", "学校", "小学", "中学", "幼儿园", "养老", "敬老", "福利院")
MAX_LISTED = 5000  # pipes or buildings listed in one answer; the totals count them all


@dataclass
class Isolation:
    """The arrays of one isolation, before they are put in words."""

    burst_piece: int
    segments: np.ndarray  # the isolated segments
    closing: np.ndarray  # valve vertices to close
    closed: np.ndarray  # valve vertices closed already that bound the isolation
    skipped: dict[int, str]  # valve vertex -> why it does not count (failed, inoperable)
    isolated_pieces: np.ndarray
    cut_off_pieces: np.ndarray
    sourceless: bool  # the network has no source: cut-off parts cannot be told


def _valve_segments(t: Topology) -> tuple[np.ndarray, np.ndarray]:
    """(valve vertices sorted, their segments): the boundary pairs ordered by valve."""
    held = t.__dict__.get("_by_valve")
    if held is None:
        order = np.argsort(t.boundary_valve, kind="stable")
        held = t.__dict__["_by_valve"] = (t.boundary_valve[order], t.boundary_segment[order])
    return held


def method(t: Topology) -> str:
    """How a burst on this network is isolated: by ``valves`` (water, gas, heat); by the
    ``line`` itself, cut, for cables fed from sources (power, telecom); by ``flow`` in a
    gravity network (drainage, sewage), where what backs up behind the burst is cut off."""
    if t.network in PRESSURE_NETWORKS:
        return "valves"
    return "line" if t.segment_source.any() else "flow"


def isolate(t: Topology, burst_piece: int, failed: set[int]) -> Isolation:
    """Isolate the burst on ``burst_piece``; ``failed`` are valve vertices that will not
    close in this run."""
    how = method(t)
    if how != "valves":
        isolated = t.pieces_of(np.array([t.piece_pipe[burst_piece]]))
        cut_off = _upstream_of(t, isolated) if how == "flow" else _unfed_without(t, isolated)
        empty = np.zeros(0, dtype=np.int64)
        return Isolation(burst_piece, np.unique(t.piece_segment[isolated]), empty, empty, {},
                         isolated, cut_off, sourceless=False)  # fmt: skip
    by_valve, by_valve_segment = _valve_segments(t)
    first = int(t.piece_segment[burst_piece])
    union = {first}
    frontier = [first]
    closing: set[int] = set()
    closed: set[int] = set()
    skipped: dict[int, str] = {}
    while frontier:
        segment = frontier.pop()
        lo = np.searchsorted(t.boundary_segment, segment, side="left")
        hi = np.searchsorted(t.boundary_segment, segment, side="right")
        for valve in t.boundary_valve[lo:hi].tolist():
            node = t.vertex_valve[valve]
            if t.node_state[node] == "closed":
                closed.add(valve)
            elif valve in failed:
                skipped[valve] = "failed"
                a = np.searchsorted(by_valve, valve, side="left")
                b = np.searchsorted(by_valve, valve, side="right")
                for other in by_valve_segment[a:b].tolist():
                    if other not in union:
                        union.add(other)
                        frontier.append(other)
            else:
                closing.add(valve)
    segments = np.array(sorted(union), dtype=np.int64)
    # A valve with the isolated part on every side of it holds nothing back: not closed.
    closing = {v for v in closing if not np.isin(by_valve_segment[
        np.searchsorted(by_valve, v, side="left"):np.searchsorted(by_valve, v, side="right")
    ], segments).all()}  # fmt: skip
    isolated = np.flatnonzero(np.isin(t.piece_segment, segments))
    # Inoperable valves inside the isolated part: the reason it reaches past them.
    for e in isolated.tolist():
        for vertex in (t.piece_u[e], t.piece_v[e]):
            node = t.vertex_valve[vertex]
            if node >= 0 and not t.node_operable[node] and t.node_state[node] != "closed":
                skipped.setdefault(int(vertex), "inoperable")
    closing_arr = np.array(sorted(closing), dtype=np.int64)
    fed = fed_segments(t, closing=closing_arr, removed=segments)
    lost = t.baseline_fed & ~fed
    lost[segments] = False
    return Isolation(
        burst_piece=burst_piece,
        segments=segments,
        closing=closing_arr,
        closed=np.array(sorted(closed), dtype=np.int64),
        skipped=skipped,
        isolated_pieces=isolated,
        cut_off_pieces=np.flatnonzero(lost[t.piece_segment]),
        sourceless=not t.segment_source.any(),
    )


def _unfed_without(t: Topology, removed: np.ndarray) -> np.ndarray:
    """The pieces that reach a source now but not once ``removed`` are out of service."""
    from twin.network.trace import reach

    sources = np.flatnonzero(t.vertex_source)
    before = reach(t, sources, "connected")
    keep = np.setdiff1d(np.arange(len(t.piece_pipe)), removed)
    vertices = len(t.vertex_xy)
    graph = sparse.coo_matrix(
        (np.ones(len(keep)), (t.piece_u[keep], t.piece_v[keep])), shape=(vertices, vertices)
    )
    _, label = csgraph.connected_components(graph, directed=False)
    fed = np.isin(label, label[sources])
    after = keep[fed[t.piece_u[keep]]]
    return np.setdiff1d(before, np.concatenate([after, removed]))


def _upstream_of(t: Topology, pieces: np.ndarray) -> np.ndarray:
    """The pieces whose flow reaches ``pieces`` (not those themselves): in a gravity network,
    what backs up behind a burst."""
    from twin.network.trace import reach  # trace builds on this module's neighbour

    ends = distinct(np.concatenate([t.piece_u[pieces], t.piece_v[pieces]]), len(t.vertex_xy))
    found = reach(t, ends, "upstream")
    return np.setdiff1d(found, pieces)


def failed_valves(t: Topology, specs: list[dict[str, Any]]) -> set[int]:
    """The valve vertices the request's ``failed_valves`` name; InvalidInput for a node that
    is not a valve or not on the network."""
    out: set[int] = set()
    for i, spec in enumerate(specs):
        what = f"failed_valves[{i}]"
        node = t.node_index(spec, what)
        if t.node_kind[node] != "valve":
            raise InvalidInput(f"{what}: node {t.node_id[node]} is a {t.node_kind[node]}, not a "
                               "valve", option=what)  # fmt: skip
        vertex = int(t.node_vertex[node])
        if vertex < 0:
            raise InvalidInput(
                f"{what}: valve {t.node_id[node]} is not on any pipe (it lies "
                f"{t.node_gap_m[node]:.1f} m from the nearest), so it isolates nothing",
                option=what,
            )
        out.add(vertex)
    return out


# -- the answer ------------------------------------------------------------------------


def _pipe_rows(t: Topology, pieces: np.ndarray, *, own_only: bool) -> tuple[list[dict], float]:
    """Pipes of these pieces: each with its length among them; (rows, total length)."""
    if not len(pieces):
        return [], 0.0
    pipes = t.piece_pipe[pieces]
    lengths = np.bincount(pipes, weights=t.piece_length_m[pieces], minlength=len(t.pipe_id))
    chosen = distinct(pipes, len(t.pipe_id))
    if own_only:
        chosen = chosen[np.isin(t.pipe_own_piece[chosen], pieces)]
    rows = [
        {
            "id": int(t.pipe_id[p]),
            "source_id": t.pipe_source_id[p],
            "dataset": t.pipe_dataset[p],
            "length_m": round(float(lengths[p]), 2),
            "diameter_mm": None
            if math.isnan(t.pipe_diameter_mm[p])
            else float(t.pipe_diameter_mm[p]),
        }
        for p in chosen.tolist()
    ]
    return rows, round(float(t.piece_length_m[pieces].sum()), 2)


def _node_row(t: Topology, node: int, **extra: Any) -> dict[str, Any]:
    lon, lat = t.node_lonlat[node]
    return {
        "id": int(t.node_id[node]),
        "source_id": t.node_source_id[node],
        "dataset": t.node_dataset[node],
        "lon": round(float(lon), 7),
        "lat": round(float(lat), 7),
        **extra,
    }


def _valve_rows(t: Topology, vertices: np.ndarray, **extra: Any) -> list[dict[str, Any]]:
    return [
        _node_row(t, int(t.vertex_valve[v]), owner_unit=t.node_owner[t.vertex_valve[v]], **extra)
        for v in vertices.tolist()
    ]


def _nodes_in(t: Topology, pieces: np.ndarray, kinds: tuple[str, ...]) -> list[int]:
    """Nodes of these kinds at the vertices of the pieces."""
    return t.nodes_at(np.concatenate([t.piece_u[pieces], t.piece_v[pieces]]), kinds).tolist()


def _volume(t: Topology, pieces: np.ndarray) -> tuple[float | None, float]:
    """(m³ in the pieces whose diameter is known, or None when none is; share known)."""
    if not len(pieces):
        return 0.0, 1.0
    diameter = t.pipe_diameter_mm[t.piece_pipe[pieces]] / 1000
    length = t.piece_length_m[pieces]
    known = ~np.isnan(diameter)
    if not known.any():
        return None, 0.0
    volume = float((math.pi * (diameter[known] / 2) ** 2 * length[known]).sum())
    share = float(length[known].sum() / length.sum()) if length.sum() > 0 else 1.0
    return round(volume, 3), round(share, 3)


_UNCONNECTED_QUERY = """
    SELECT DISTINCT b.id, ST_AsBinary(b.geom) FROM pipes p
    JOIN buildings b ON ST_DWithin(b.geom, p.geom, %(degrees)s)
    WHERE p.id = ANY(%(pipes)s)
      AND NOT EXISTS (SELECT 1 FROM pipe_nodes n
                      WHERE n.building_id = b.id AND n.network = %(network)s)
"""


def _served_by_nearest(
    conn: psycopg.Connection, t: Topology, pipes: np.ndarray, service_m: float
) -> list[int]:
    """The buildings with no service connection on this network whose nearest pipe of it,
    within ``service_m``, is one of ``pipes`` (indices): taken as served from there."""
    if not len(pipes):
        return []
    rows = conn.execute(
        _UNCONNECTED_QUERY,
        {"pipes": t.pipe_id[pipes].tolist(), "network": t.network,
         "degrees": service_m / 80_000},  # metres to degrees, generously; exact below
        binary=True,
    ).fetchall()  # fmt: skip
    if not rows:
        return []
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    shapes = shapely.transform(shapely.from_wkb([bytes(r[1]) for r in rows]), t.frame.metric)
    which, nearest = t.pipe_tree().query_nearest(shapes, max_distance=service_m, all_matches=False)
    return sorted(set(ids[which[np.isin(nearest, pipes)]].tolist()))


_BUILDINGS_QUERY = """
    SELECT b.id, b.source_id, b.name, b.address, b.use, b.floors,
           coalesce(b.properties->>'households', b.properties->>'户数') AS households,
           ST_X(c.point) AS lon, ST_Y(c.point) AS lat,
           coalesce((
               SELECT json_agg(json_build_object('code', j.code, 'name', j.name,
                                                 'level', j.level)
                               ORDER BY array_position(
                                   ARRAY['city','district','street','grid','community'],
                                   j.level), j.code)
               FROM jurisdictions j
               WHERE j.geom && c.point AND ST_Intersects(j.geom, c.point)
           ), '[]'::json) AS jurisdictions
    FROM buildings b CROSS JOIN LATERAL (SELECT ST_PointOnSurface(b.geom) AS point) AS c
    WHERE b.id = ANY(%(ids)s)
    ORDER BY b.id
"""


def sensitive(building: dict[str, Any]) -> bool:
    """Whether a building is a sensitive site: a hospital, a school, a home for the elderly."""
    name = building.get("name") or ""
    return building.get("use") in SENSITIVE_USES or any(w in name for w in SENSITIVE_WORDS)


def _households(value: Any) -> int | None:
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        return None
    return number if 0 <= number < 10**7 else None


def affected_buildings(
    conn: psycopg.Connection,
    t: Topology,
    parts: dict[str, np.ndarray],
    service_m: float,
) -> list[dict[str, Any]]:
    """The buildings served from each part (``{"isolated": pieces, "cut_off": pieces}``):
    by their service connections, or, for a building with none on this network, by the
    nearest pipe within ``service_m``. Sensitive sites first, then by id."""
    served: dict[int, tuple[str, str]] = {}
    for part, pieces in parts.items():
        if not len(pieces):
            continue
        for n in _nodes_in(t, pieces, ("service_connection",)):
            if t.node_building[n] >= 0:
                served.setdefault(int(t.node_building[n]), (part, "service_connection"))
        own = t.piece_pipe[pieces]
        pipes = distinct(own[np.isin(t.pipe_own_piece[own], pieces)], len(t.pipe_id))
        for building in _served_by_nearest(conn, t, pipes, service_m):
            served.setdefault(building, (part, "nearest_pipe"))
    if not served:
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_BUILDINGS_QUERY, {"ids": sorted(served)}).fetchall()
    out = []
    for row in rows:
        part, how = served[row["id"]]
        row["households"] = _households(row["households"])
        row["lon"], row["lat"] = round(row["lon"], 7), round(row["lat"], 7)
        out.append({**row, "part": part, "served_by": how, "sensitive": sensitive(row)})
    out.sort(key=lambda b: (not b["sensitive"], b["part"] != "isolated", b["id"]))
    return out


def describe(
    conn: psycopg.Connection,
    t: Topology,
    result: Isolation,
    *,
    service_m: float,
    burst: dict[str, Any],
) -> dict[str, Any]:
    """The isolation in the words of the API: valves, pipes, hydrants, buildings."""
    isolated_pipes, isolated_m = _pipe_rows(t, result.isolated_pieces, own_only=True)
    cut_pipes, cut_m = _pipe_rows(t, result.cut_off_pieces, own_only=True)
    volume, volume_share = _volume(t, result.isolated_pieces)
    hydrants = [
        _node_row(t, n, part=part)
        for part, pieces in (("isolated", result.isolated_pieces), ("cut_off", result.cut_off_pieces))
        if len(pieces)
        for n in _nodes_in(t, pieces, ("hydrant",))
    ]  # fmt: skip
    buildings = affected_buildings(
        conn, t, {"isolated": result.isolated_pieces, "cut_off": result.cut_off_pieces}, service_m
    )
    skipped = [
        _node_row(t, int(t.vertex_valve[v]), reason=why)
        for v, why in sorted(result.skipped.items())
    ]
    warnings = []
    if result.sourceless:
        warnings.append(f"the {t.network} network has no source or tank: what the closed valves "
                        "cut off cannot be told")  # fmt: skip
    if (method(t) == "valves" and t.segment_source.any()
            and not t.baseline_fed[t.piece_segment[result.burst_piece]]):  # fmt: skip
        warnings.append("the burst's part of the network reaches no source even with every "
                        "valve as it is (a part apart from the rest, or behind closed "
                        "valves): nothing is supplied through it")  # fmt: skip
    if not len(result.closing) and t.network in PRESSURE_NETWORKS:
        warnings.append("no valve bounds this part: it can only be isolated at its sources")
    return {
        "network": t.network,
        "method": method(t),
        "burst": burst,
        "valves": _valve_rows(t, result.closing),
        "valves_closed_already": _valve_rows(t, result.closed),
        "valves_skipped": skipped,
        "isolated_pipes": isolated_pipes[:MAX_LISTED],
        "isolated_pipe_count": len(isolated_pipes),
        "total_length_m": isolated_m,
        "volume_m3": volume,
        "volume_known_share": volume_share,
        "hydrants": hydrants,
        "cut_off_pipes": cut_pipes[:MAX_LISTED],
        "cut_off_pipe_count": len(cut_pipes),
        "cut_off_length_m": cut_m,
        "buildings": buildings[:MAX_LISTED],
        "building_count": len(buildings),
        # Summed where known; null when no affected building's households are known.
        "households": sum(b["households"] for b in known)
        if (known := [b for b in buildings if b["households"] is not None])
        else None,
        "households_known_for": len(known),
        "sensitive_sites": sum(1 for b in buildings if b["sensitive"]),
        "warnings": warnings,
    }
