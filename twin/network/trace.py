"""Traces (追踪分析): what is connected to a place, what lies upstream and downstream of it,
and the shortest way along the pipes between two places. Closed valves stop every trace.

Flow follows each pipe's flow direction, or its inverts (higher to lower). Where neither is
known, a pressure network flows away from its sources (each pipe from its end nearer a
source, along the pipes, to the farther one); a gravity network's unknown pipes are taken
both ways, and the answer says how many.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from twin.errors import InvalidInput
from twin.network.topology import PRESSURE_NETWORKS, Topology, distinct

TRACES = ("connected", "upstream", "downstream", "path")
MAX_FEATURES = 10_000  # features in one answer; the totals count everything found


def _closed_split(t: Topology) -> tuple[np.ndarray, np.ndarray, int]:
    """The pieces' ends with each closed valve split into one vertex per piece end (so no
    trace passes it); (u, v, vertex count)."""
    vertices, pieces = len(t.vertex_xy), len(t.piece_pipe)
    valve = t.vertex_valve
    closed = np.zeros(vertices, dtype=bool)
    has = valve >= 0
    closed[has] = t.node_state[valve[has]] == "closed"
    u = np.where(closed[t.piece_u], vertices + np.arange(pieces), t.piece_u)
    v = np.where(closed[t.piece_v], vertices + pieces + np.arange(pieces), t.piece_v)
    return u, v, vertices + 2 * pieces


def _graphs(t: Topology) -> dict[str, Any]:
    """The graphs traces walk, made once per topology."""
    held = t.__dict__.setdefault("_trace_graphs", {})
    if held:
        return held
    u, v, size = _closed_split(t)
    pieces = len(u)
    direction = t.pipe_direction[t.piece_pipe].astype(np.int8)
    unknown = ~t.pipe_direction_known[t.piece_pipe]
    both_ways = int((~unknown & (direction == 0)).sum())
    undirected = sparse.coo_matrix((np.ones(pieces), (u, v)), shape=(size, size)).tocsr()
    if t.network in PRESSURE_NETWORKS and unknown.any() and t.vertex_source.any():
        # Away from the sources: along each piece from the end nearer a source.
        weights = sparse.coo_matrix(
            (np.maximum(t.piece_length_m, 1e-3), (u, v)), shape=(size, size)
        ).tocsr()
        sources = np.flatnonzero(t.vertex_source)
        distance = csgraph.dijkstra(weights, directed=False, indices=sources, min_only=True)
        du, dv = distance[u], distance[v]
        guessed = np.where(du < dv, 1, np.where(dv < du, -1, 0)).astype(np.int8)
        direction = np.where(unknown, guessed, direction)
        unknown = unknown & (guessed == 0)
    forward = direction >= 0  # u -> v
    backward = direction <= 0  # v -> u
    tails = np.concatenate([u[forward], v[backward]])
    heads = np.concatenate([v[forward], u[backward]])
    edge_piece = np.concatenate([np.flatnonzero(forward), np.flatnonzero(backward)])
    directed = sparse.coo_matrix((np.ones(len(tails)), (tails, heads)), shape=(size, size))
    _, component = csgraph.connected_components(undirected, directed=False)
    held.update(
        u=u,
        v=v,
        size=size,
        undirected=undirected,
        downstream=directed.tocsr(),
        upstream=directed.T.tocsr(),
        tails=tails,
        heads=heads,
        edge_piece=edge_piece,
        component=component,
        unknown=int(unknown.sum()),
        both_ways=both_ways,
    )
    return held


def _reached(graph: sparse.csr_matrix, starts: np.ndarray, size: int) -> np.ndarray:
    """Vertices reachable from any of ``starts`` along ``graph``."""
    seen = np.zeros(size, dtype=bool)
    for start in np.unique(starts).tolist():
        if not seen[start]:
            seen[csgraph.breadth_first_order(graph, start, directed=True,
                                             return_predecessors=False)] = True  # fmt: skip
    return seen


def reach(t: Topology, starts: np.ndarray, way: str) -> np.ndarray:
    """The pieces reached from the vertices ``starts`` going ``way`` (upstream, downstream
    or connected)."""
    g = _graphs(t)
    if way == "connected":
        labels = np.unique(g["component"][starts])
        return np.flatnonzero(np.isin(g["component"][g["u"]], labels))
    seen = _reached(g[way], starts, g["size"])
    # A piece is walked when the walk enters it: at its tail going downstream, at its head
    # going upstream.
    entry = g["tails"] if way == "downstream" else g["heads"]
    return distinct(g["edge_piece"][seen[entry]], len(t.piece_pipe))


def graph_ends(t: Topology) -> tuple[np.ndarray, np.ndarray]:
    """Each piece's end vertices in the graphs traces walk (closed valves split)."""
    g = _graphs(t)
    return g["u"], g["v"]


def path(
    t: Topology, starts: list[int], goals: list[int], *, limit: float = np.inf
) -> np.ndarray | None:
    """The pieces of the shortest way along the pipes from any of the vertices ``starts`` to
    the nearest of ``goals`` (vertices of ``graph_ends``), in order; None when no way within
    ``limit`` metres joins them. One Dijkstra walk, no farther than ``limit``."""
    g = _graphs(t)
    weighted, keys, key_piece = _shortest_pieces(t, g["u"], g["v"], g["size"])
    distance, predecessor, _ = csgraph.dijkstra(
        weighted, directed=False, indices=starts, return_predecessors=True, min_only=True,
        limit=limit,
    )  # fmt: skip
    reachable = [goal for goal in goals if np.isfinite(distance[goal])]
    if not reachable:
        return None
    goal = min(reachable, key=lambda v: distance[v])
    hops = []
    at = goal
    while predecessor[at] >= 0:
        before = int(predecessor[at])
        hops.append((min(before, at), max(before, at)))
        at = before
    hops.reverse()
    size = g["size"]
    wanted = np.array([a * size + b for a, b in hops], dtype=np.int64)
    return key_piece[np.searchsorted(keys, wanted)] if len(wanted) else np.zeros(0, np.int64)


def _shortest_pieces(
    t: Topology, u: np.ndarray, v: np.ndarray, size: int
) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """The graph weighted by length, with the shortest of parallel pieces kept; and, sorted,
    each kept pair's key (low * size + high) with its piece."""
    held = t.__dict__.setdefault("_trace_graphs", {})
    if "weighted" not in held:
        a, b = np.minimum(u, v).astype(np.int64), np.maximum(u, v).astype(np.int64)
        length = np.maximum(t.piece_length_m, 1e-6)
        order = np.lexsort((length, b, a))
        keep = order[np.r_[True, (a[order][1:] != a[order][:-1]) | (b[order][1:] != b[order][:-1])]]
        held["weighted"] = sparse.coo_matrix(
            (length[keep], (a[keep], b[keep])), shape=(size, size)
        ).tocsr()
        keys = a[keep] * size + b[keep]
        by_key = np.argsort(keys)
        held["keys"], held["key_piece"] = keys[by_key], keep[by_key]
    return held["weighted"], held["keys"], held["key_piece"]


def start_vertices(t: Topology, piece: int | None, vertex: int | None, way: str) -> np.ndarray:
    """Where a trace from a piece or a vertex begins: going downstream, at the piece's
    downstream end; upstream, at its upstream end; otherwise at both ends."""
    if vertex is not None:
        return np.array([vertex], dtype=np.int64)
    assert piece is not None
    g = _graphs(t)
    u, v = int(g["u"][piece]), int(g["v"][piece])
    direction = int(t.pipe_direction[t.piece_pipe[piece]])
    if way == "downstream" and direction:
        return np.array([v if direction > 0 else u])
    if way == "upstream" and direction:
        return np.array([u if direction > 0 else v])
    return np.array([u, v])


def check_trace(trace: str) -> str:
    """``trace``, or InvalidInput naming the traces there are."""
    if trace not in TRACES:
        raise InvalidInput(f"unknown trace {trace!r}; the traces are " + ", ".join(TRACES),
                           option="trace")  # fmt: skip
    return trace


def features(
    t: Topology, pieces: np.ndarray, *, limit: int = MAX_FEATURES
) -> tuple[list[dict[str, Any]], float, int]:
    """GeoJSON features of the pipes the pieces are of (each pipe once, with the length
    traced along it and the traced part's geometry) and of the nodes at their ends, the
    first ``limit`` of them; (features, total length in metres, how many there were)."""
    total = float(t.piece_length_m[pieces].sum()) if len(pieces) else 0.0
    pipes = t.piece_pipe[pieces]
    chosen = distinct(pipes, len(t.pipe_id))
    reached = np.zeros(len(t.vertex_xy), dtype=bool)
    reached[t.piece_u[pieces]] = True
    reached[t.piece_v[pieces]] = True
    on = t.node_vertex >= 0
    nodes = np.flatnonzero(on)[reached[t.node_vertex[on]]]
    count = len(chosen) + len(nodes)
    shown = chosen[:limit]
    shown_pieces = pieces[np.isin(pipes, shown)]
    lengths = np.bincount(t.piece_pipe[shown_pieces], weights=t.piece_length_m[shown_pieces],
                          minlength=len(t.pipe_id))  # fmt: skip
    out: list[dict[str, Any]] = []
    for p in shown.tolist():
        whole = abs(lengths[p] - t.pipe_length_m[p]) < 1e-6 * max(1.0, t.pipe_length_m[p])
        if whole:
            geometry = t.lonlat_geometry(t.pipe_lines[p])
        else:
            parts = t.piece_geometry(np.sort(shown_pieces[t.piece_pipe[shown_pieces] == p]))
            geometry = (
                parts[0]
                if len(parts) == 1
                else {"type": "MultiLineString", "coordinates": [g["coordinates"] for g in parts]}
            )
        out.append({
            "type": "Feature",
            "id": f"pipes.{int(t.pipe_id[p])}",
            "geometry": geometry,
            "properties": {
                "layer": "pipes", "id": int(t.pipe_id[p]), "source_id": t.pipe_source_id[p],
                "dataset": t.pipe_dataset[p], "length_m": round(float(lengths[p]), 2),
                "whole": bool(whole),
                "diameter_mm": None if np.isnan(t.pipe_diameter_mm[p]) else float(t.pipe_diameter_mm[p]),
            },
        })  # fmt: skip
    for n in nodes[: max(0, limit - len(out))].tolist():
        lon, lat = t.node_lonlat[n]
        out.append({
            "type": "Feature",
            "id": f"pipe_nodes.{int(t.node_id[n])}",
            "geometry": {"type": "Point", "coordinates": [round(float(lon), 7), round(float(lat), 7)]},
            "properties": {
                "layer": "pipe_nodes", "id": int(t.node_id[n]), "source_id": t.node_source_id[n],
                "dataset": t.node_dataset[n], "kind": t.node_kind[n], "state": t.node_state[n],
            },
        })  # fmt: skip
    return out, round(total, 2), count


def both_ways(t: Topology) -> int:
    """Pieces whose pipe says its flow goes both ways (a looped main)."""
    return int(_graphs(t)["both_ways"])


def unknown_directions(t: Topology) -> int:
    """Pieces whose flow direction could not be told (taken both ways)."""
    return int(_graphs(t)["unknown"])
