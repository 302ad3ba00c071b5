"""A pipe network's topology, built from geometry as utility GIS data really comes.

Pipes are lines with no node ids and nodes are points. Pipe ends closer than the snapping
tolerance meet at one vertex (so do the two ends of a pump or a control valve drawn at one
place); a node within the tolerance of a pipe end is that vertex; a node that lies on a pipe
anywhere else (a valve a metre from a junction, a hydrant tee) splits the pipe there. Ends
that carry node ids (EPANET imports) are tied to those nodes and never snapped to others.

The graph's edges are the **pieces** of pipes between vertices. A pipe's **own part** is its
longest piece: the part a burst given as that pipe is on, away from the valves that lie on
it near its junctions (the link WNTR's valve layer puts a valve on).

Valve **segments** (USEPA WNTR's ``valve_segments``) are the parts the operable valves cut
the network into: the components of the graph once each such valve vertex is split into one
end per piece it touches. Isolation, cut-off and traces are graph walks on arrays (scipy's
csgraph): a network of 100,000 pipes answers in milliseconds.

A topology is read whole from the data base and kept per process (``topology``); every
answer first asks the change log whether pipes or nodes changed since, and builds again when
they did, so it is never stale. Coordinates are in a local metric frame (an equirectangular
projection about the network's middle: within 0.2 % over a city, so gaps and tolerances are
right to the millimetre); lengths are geodesic, from PostGIS.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import shapely
import shapely.geometry
import shapely.ops
from scipy import sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

from twin.errors import InvalidInput, NotFound
from twin.schema import PIPE_NETWORKS

EARTH_M = 6_371_008.8  # mean radius: metres per radian
PRESSURE_NETWORKS = ("water", "gas", "heat")  # isolated by valves, fed from sources
SOURCE_KINDS = ("source", "tank")
LIVE_STATUSES = ("in_service", "under_repair")  # planned and abandoned pipes carry nothing
POINT_SEARCH_M = 200.0
MAX_KEPT = 16  # topologies kept per process (networks of each data base served)  # a point farther than this from every pipe names no pipe


@dataclass(frozen=True)
class Frame:
    """A local metric frame: metres east and north of (lon0, lat0)."""

    lon0: float
    lat0: float

    @property
    def scale(self) -> tuple[float, float]:
        """Metres per degree of longitude and of latitude here."""
        k = EARTH_M * math.pi / 180
        return k * math.cos(math.radians(self.lat0)), k

    def metric(self, lonlat: np.ndarray) -> np.ndarray:
        """Lon/lat (n, 2) to metres (n, 2)."""
        kx, ky = self.scale
        return np.column_stack([(lonlat[:, 0] - self.lon0) * kx, (lonlat[:, 1] - self.lat0) * ky])

    def lonlat(self, xy: np.ndarray) -> np.ndarray:
        """Metres (n, 2) back to lon/lat (n, 2)."""
        kx, ky = self.scale
        return np.column_stack([xy[:, 0] / kx + self.lon0, xy[:, 1] / ky + self.lat0])


@dataclass
class Topology:
    """One network's pipes, nodes, vertices, pieces and valve segments (arrays, by index)."""

    network: str
    version: tuple[int, int, int]
    snap_m: float
    frame: Frame
    built_s: float
    # pipes, by index p
    pipe_id: np.ndarray
    pipe_source_id: np.ndarray
    pipe_dataset: np.ndarray
    pipe_length_m: np.ndarray
    pipe_diameter_mm: np.ndarray  # NaN where not known
    pipe_direction: np.ndarray  # +1 along the line, -1 against it, 0 both ways or unknown
    pipe_direction_known: np.ndarray
    pipe_owner: np.ndarray
    pipe_lines: np.ndarray  # shapely lines in the metric frame
    pipe_own_piece: np.ndarray
    # nodes (pipe_nodes of the network), by index n
    node_id: np.ndarray
    node_source_id: np.ndarray
    node_dataset: np.ndarray
    node_kind: np.ndarray
    node_state: np.ndarray
    node_operable: np.ndarray
    node_building: np.ndarray  # building id or -1
    node_owner: np.ndarray
    node_lonlat: np.ndarray
    node_vertex: np.ndarray  # -1: off the network
    node_gap_m: np.ndarray  # distance to the nearest pipe, for nodes off the network
    # vertices, by index v
    vertex_xy: np.ndarray
    vertex_valve: np.ndarray  # node index of the valve that is this vertex, or -1
    vertex_source: np.ndarray  # bool: a source or tank is here
    # pieces, by index e
    piece_pipe: np.ndarray
    piece_u: np.ndarray
    piece_v: np.ndarray
    piece_from: np.ndarray  # fraction of the pipe's length where the piece starts
    piece_to: np.ndarray
    piece_length_m: np.ndarray
    # valve segments
    piece_segment: np.ndarray
    vertex_segment: np.ndarray  # segment of a vertex that is not a blocking valve, else -1
    segments: int
    segment_source: np.ndarray  # bool per segment
    boundary_valve: np.ndarray  # (valve vertex, segment) pairs, sorted by segment
    boundary_segment: np.ndarray
    baseline_fed: np.ndarray  # bool per segment: reaches a source with every valve as it is
    _by_source_id: dict[str, list[int]] | None = field(default=None, repr=False)
    _node_by_source_id: dict[str, list[int]] | None = field(default=None, repr=False)
    _tree: shapely.STRtree | None = field(default=None, repr=False)

    # -- finding what a request names -------------------------------------------------

    def pipe_index(self, spec: dict[str, Any], what: str = "pipe") -> int:
        """The index of the pipe ``{"id": N}`` or ``{"source_id": S, "dataset": D}`` names."""
        return self._find(spec, what, self.pipe_id, self._pipe_source_ids(), self.pipe_dataset)

    def node_index(self, spec: dict[str, Any], what: str = "node") -> int:
        """The index of the node ``{"id": N}`` or ``{"source_id": S, "dataset": D}`` names."""
        return self._find(spec, what, self.node_id, self._node_source_ids(), self.node_dataset)

    def _find(
        self,
        spec: dict[str, Any],
        what: str,
        ids: np.ndarray,
        by_source: dict[str, list[int]],
        datasets: np.ndarray,
    ) -> int:
        noun = "pipe" if ids is self.pipe_id else "node"
        if "id" in spec:
            i = int(np.searchsorted(ids, spec["id"]))
            if i < len(ids) and ids[i] == spec["id"]:
                return i
            raise NotFound(f"{what}: the {self.network} network has no {noun} with id "
                           f"{spec['id']}" + (" in service (is it of another network?)" if noun == "pipe"
                                                  else ""))  # fmt: skip
        found = by_source.get(spec["source_id"], [])
        if spec.get("dataset") is not None:
            found = [i for i in found if datasets[i] == spec["dataset"]]
        if not found:
            where = f" in dataset {spec['dataset']!r}" if spec.get("dataset") is not None else ""
            raise NotFound(f"{what}: the {self.network} network has no {noun} with source_id "
                           f"{spec['source_id']!r}{where}")  # fmt: skip
        if len(found) > 1:
            names = ", ".join(sorted({str(datasets[i]) for i in found}))
            raise InvalidInput(
                f"{what}: source_id {spec['source_id']!r} is in several datasets ({names}); "
                'say which with "dataset"',
                option=f"{what}.dataset",
            )
        return found[0]

    def _pipe_source_ids(self) -> dict[str, list[int]]:
        if self._by_source_id is None:
            self._by_source_id = _index(self.pipe_source_id)
        return self._by_source_id

    def _node_source_ids(self) -> dict[str, list[int]]:
        if self._node_by_source_id is None:
            self._node_by_source_id = _index(self.node_source_id)
        return self._node_by_source_id

    def nearest_piece(self, lon: float, lat: float, what: str = "point") -> tuple[int, float]:
        """The piece of pipe nearest the point and the distance (m); InvalidInput saying how
        far the nearest pipe is when none is within ``POINT_SEARCH_M``."""
        if len(self.pipe_id) == 0:
            raise NotFound(f"the {self.network} network has no pipes in service")
        here = shapely.points(self.frame.metric(np.array([[lon, lat]])))[0]
        pipe = int(self.pipe_tree().nearest(here))
        line = self.pipe_lines[pipe]
        distance = float(shapely.distance(line, here))
        if distance > POINT_SEARCH_M:
            raise InvalidInput(
                f"{what}: no {self.network} pipe within {POINT_SEARCH_M:.0f} m of "
                f"({lon}, {lat}); the nearest is {distance:.0f} m away",
                option=what,
            )
        fraction = float(shapely.line_locate_point(line, here, normalized=True))
        return self.piece_at(pipe, fraction), distance

    def pipe_tree(self) -> shapely.STRtree:
        """The spatial index of the pipes (metric frame), made on first use."""
        if self._tree is None:
            self._tree = shapely.STRtree(self.pipe_lines)
        return self._tree

    def piece_at(self, pipe: int, fraction: float) -> int:
        """The piece of ``pipe`` that holds ``fraction`` of its length."""
        pieces = self._pieces_of(pipe)
        for e in pieces:
            if self.piece_from[e] <= fraction <= self.piece_to[e]:
                return int(e)
        return int(pieces[-1])

    def _pieces_of(self, pipe: int) -> np.ndarray:
        lo = int(np.searchsorted(self.piece_pipe, pipe, side="left"))
        hi = int(np.searchsorted(self.piece_pipe, pipe, side="right"))
        return np.arange(lo, hi)

    def nodes_at(self, vertices: np.ndarray, kinds: tuple[str, ...] | None = None) -> np.ndarray:
        """The nodes (indices, sorted) at these vertices, of these kinds (default: all)."""
        here = np.zeros(len(self.vertex_xy), dtype=bool)
        here[vertices] = True
        on = np.flatnonzero(self.node_vertex >= 0)
        found = on[here[self.node_vertex[on]]]
        return found if kinds is None else found[np.isin(self.node_kind[found], kinds)]

    def pieces_of(self, pipes: np.ndarray) -> np.ndarray:
        """Every piece of these pipes (pieces are sorted by pipe)."""
        return np.flatnonzero(np.isin(self.piece_pipe, pipes))

    # -- geometry for answers ----------------------------------------------------------

    def along_pipe(self, pipe: int, fraction: float) -> list[float]:
        """[lon, lat] of the point ``fraction`` of the way along ``pipe``."""
        point = shapely.line_interpolate_point(self.pipe_lines[pipe], fraction, normalized=True)
        ((lon, lat),) = self.frame.lonlat(shapely.get_coordinates(point))
        return [round(float(lon), 7), round(float(lat), 7)]

    def on_pipe(self, pipe: int, lon: float, lat: float) -> list[float]:
        """[lon, lat] of the point of ``pipe`` nearest (lon, lat)."""
        here = shapely.points(self.frame.metric(np.array([[lon, lat]])))[0]
        line = self.pipe_lines[pipe]
        return self.along_pipe(pipe, float(shapely.line_locate_point(line, here, normalized=True)))

    def piece_geometry(self, pieces: np.ndarray) -> list[dict[str, Any]]:
        """GeoJSON lines (lon/lat) of the pieces, one per piece."""
        out = []
        for e in pieces.tolist():
            line = self.pipe_lines[self.piece_pipe[e]]
            length = shapely.length(line)
            a, b = self.piece_from[e] * length, self.piece_to[e] * length
            part = shapely.ops.substring(line, a, b) if (a > 0 or b < length) else line
            out.append(self.lonlat_geometry(part))
        return out

    def lonlat_geometry(self, shape: Any) -> dict[str, Any]:
        """A metric-frame shapely geometry as a lon/lat GeoJSON geometry."""
        moved = shapely.transform(shape, self.frame.lonlat)
        return shapely.geometry.mapping(shapely.set_precision(moved, 1e-8))


def distinct(values: np.ndarray, size: int) -> np.ndarray:
    """The distinct values of an array of indices below ``size``, sorted: a mask, much
    faster than ``np.unique`` on the hundreds of thousands a trace can reach."""
    seen = np.zeros(size, dtype=bool)
    seen[values] = True
    return np.flatnonzero(seen)


def _index(values: np.ndarray) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, value in enumerate(values.tolist()):
        if value is not None:
            out.setdefault(value, []).append(i)
    return out


# -- building -------------------------------------------------------------------------

_PIPES_QUERY = """
    SELECT id, source_id, dataset, diameter_mm, flow_direction, invert_start_m, invert_end_m,
           from_node_id, to_node_id, owner_unit, ST_Length(geom::geography), ST_AsBinary(geom)
    FROM pipes
    WHERE network = %s AND status = ANY(%s) AND NOT ST_IsEmpty(geom)
    ORDER BY id
"""
_NODES_QUERY = """
    SELECT id, source_id, dataset, kind, state, operable, coalesce(building_id, -1),
           owner_unit, ST_X(geom), ST_Y(geom)
    FROM pipe_nodes WHERE network = %s AND NOT ST_IsEmpty(geom) ORDER BY id
"""


def check_network(network: str) -> str:
    """``network``, or InvalidInput naming the networks there are."""
    if network not in PIPE_NETWORKS:
        raise NotFound(f"no pipe network {network!r}; the networks are "
                       + ", ".join(PIPE_NETWORKS))  # fmt: skip
    return network


def network_version(conn: psycopg.Connection) -> tuple[int, int, int]:
    """(the data base's oid, the last change of pipes or pipe nodes, how many there are): a
    topology built at one version holds while the version stays. The count catches a change
    whose number was drawn before the last one's but committed after it."""
    row = conn.execute(
        "SELECT (SELECT oid FROM pg_database WHERE datname = current_database())::bigint,"
        " coalesce(max(id), 0), count(*)"
        " FROM layer_changes WHERE layer IN ('pipes', 'pipe_nodes')"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def build(conn: psycopg.Connection, network: str, snap_m: float) -> Topology:
    """Read the network from the data base and build its topology."""
    started = time.perf_counter()
    check_network(network)
    version = network_version(conn)
    pipes = conn.execute(_PIPES_QUERY, (network, list(LIVE_STATUSES)), binary=True).fetchall()
    nodes = conn.execute(_NODES_QUERY, (network,), binary=True).fetchall()
    return _assemble(network, version, snap_m, pipes, nodes, started)


def _column(rows: list[Any], i: int, dtype: Any = object) -> np.ndarray:
    return np.array([r[i] for r in rows], dtype=dtype)


def _shared(rows: list[Any], i: int) -> np.ndarray:
    """A text column of few distinct values (dataset, owner, kind, state), each value held
    once: hundreds of thousands of copies of "demo" cost tens of megabytes."""
    held: dict[Any, Any] = {}
    return np.array([held.setdefault(r[i], r[i]) for r in rows], dtype=object)


def _assemble(
    network: str,
    version: tuple[int, int, int],
    snap_m: float,
    pipes: list[Any],
    nodes: list[Any],
    started: float,
) -> Topology:
    n_pipes, n_nodes = len(pipes), len(nodes)
    lines_ll = shapely.from_wkb([bytes(r[11]) for r in pipes]) if pipes else np.array([])
    node_ll = np.array([(r[8], r[9]) for r in nodes], dtype=float).reshape(-1, 2)
    if n_pipes:
        bounds = shapely.total_bounds(lines_ll)
        frame = Frame((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
    elif n_nodes:
        frame = Frame(float(node_ll[:, 0].mean()), float(node_ll[:, 1].mean()))
    else:
        frame = Frame(0.0, 0.0)
    lines = shapely.transform(lines_ll, frame.metric) if n_pipes else np.array([], dtype=object)
    node_xy = frame.metric(node_ll) if n_nodes else np.zeros((0, 2))

    node_id = _column(nodes, 0, np.int64)
    start = shapely.get_coordinates(shapely.get_point(lines, 0)) if n_pipes else np.zeros((0, 2))
    end = shapely.get_coordinates(shapely.get_point(lines, -1)) if n_pipes else np.zeros((0, 2))

    # Items joined into vertices: the 2P pipe ends (start of pipe p: p, end: P + p), then
    # the N nodes (2P + n). A vertex is a connected component of the joins.
    ends_xy = np.concatenate([start, end])
    end_node = np.concatenate([_node_of(pipes, 7, node_id), _node_of(pipes, 8, node_id)])
    joins_a: list[np.ndarray] = []
    joins_b: list[np.ndarray] = []
    tied = np.flatnonzero(end_node >= 0)  # ends that name their node (EPANET)
    joins_a.append(tied)
    joins_b.append(2 * n_pipes + end_node[tied])
    free = np.flatnonzero(end_node < 0)
    if len(free):
        tree = cKDTree(ends_xy[free])
        pairs = tree.query_pairs(snap_m, output_type="ndarray")
        joins_a.append(free[pairs[:, 0]])
        joins_b.append(free[pairs[:, 1]])
    # A node within the tolerance of a free pipe end is that end's vertex.
    node_at_end = np.full(n_nodes, False)
    if len(free) and n_nodes:
        distance, nearest = tree.query(node_xy, distance_upper_bound=snap_m)
        hit = np.isfinite(distance)
        joins_a.append(free[nearest[hit]])
        joins_b.append(2 * n_pipes + np.flatnonzero(hit))
        node_at_end |= hit
    node_at_end[np.unique(end_node[tied])] = True
    # A node elsewhere within the tolerance of a pipe splits it there.
    split_node = np.flatnonzero(~node_at_end)
    split_pipe = np.zeros(0, dtype=np.int64)
    node_gap = np.full(n_nodes, np.nan)
    on_pipe = np.full(n_nodes, False)
    on_pipe[node_at_end] = True
    strtree = shapely.STRtree(lines) if n_pipes else None
    if len(split_node) and strtree is not None:
        points = shapely.points(node_xy[split_node])
        (which, pipe), gap = strtree.query_nearest(points, return_distance=True, all_matches=False)
        node_gap[split_node[which]] = gap
        close = gap <= snap_m
        split_node, split_pipe = split_node[which[close]], pipe[close]
        on_pipe[split_node] = True
    items = 2 * n_pipes + n_nodes
    a, b = np.concatenate(joins_a), np.concatenate(joins_b)
    joined = sparse.coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(items, items))
    _, label = csgraph.connected_components(joined, directed=False)
    # Vertices numbered 0..V-1 in order of first appearance.
    _, vertex_of_item = np.unique(label, return_inverse=True)
    vertices = int(vertex_of_item.max()) + 1 if items else 0
    start_v, end_v = vertex_of_item[:n_pipes], vertex_of_item[n_pipes : 2 * n_pipes]
    node_vertex = np.where(on_pipe, vertex_of_item[2 * n_pipes :], -1) if n_nodes else \
        np.zeros(0, dtype=np.int64)  # fmt: skip

    vertex_xy = np.zeros((vertices, 2))
    vertex_xy[vertex_of_item[: 2 * n_pipes]] = ends_xy
    if n_nodes:
        vertex_xy[vertex_of_item[2 * n_pipes :]] = node_xy

    # Pieces: each pipe cut at its ends and at the nodes that split it.
    fraction = np.zeros(len(split_node))
    if len(split_node):
        fraction = shapely.line_locate_point(
            lines[split_pipe], shapely.points(node_xy[split_node]), normalized=True
        )
    cut_pipe = np.concatenate([np.arange(n_pipes), split_pipe, np.arange(n_pipes)])
    cut_at = np.concatenate([np.zeros(n_pipes), fraction, np.ones(n_pipes)])
    cut_rank = np.concatenate([np.zeros(n_pipes), np.ones(len(split_node)), np.full(n_pipes, 2)])
    cut_vertex = np.concatenate([start_v, node_vertex[split_node], end_v]).astype(np.int64)
    order = np.lexsort((cut_rank, cut_at, cut_pipe))
    cut_pipe, cut_at, cut_vertex = cut_pipe[order], cut_at[order], cut_vertex[order]
    inner = np.flatnonzero(cut_pipe[1:] == cut_pipe[:-1])
    piece_pipe = cut_pipe[inner]
    piece_u, piece_v = cut_vertex[inner], cut_vertex[inner + 1]
    piece_from, piece_to = cut_at[inner], cut_at[inner + 1]
    pipe_length = _column(pipes, 10, float)
    piece_length = (piece_to - piece_from) * pipe_length[piece_pipe] if n_pipes else np.zeros(0)
    own = np.full(n_pipes, -1, dtype=np.int64)
    if len(piece_pipe):
        # The longest piece of each pipe: sort by (pipe, length) and take each pipe's last.
        by_length = np.lexsort((piece_length, piece_pipe))
        last = np.r_[piece_pipe[by_length][1:] != piece_pipe[by_length][:-1], True]
        own[piece_pipe[by_length][last]] = by_length[last]

    kind = _shared(nodes, 3)
    state = _shared(nodes, 4)
    operable = _column(nodes, 5, bool)
    vertex_valve = np.full(vertices, -1, dtype=np.int64)
    vertex_source = np.zeros(vertices, dtype=bool)
    on = np.flatnonzero(node_vertex >= 0)
    valves = on[kind[on] == "valve"][::-1]  # reversed: the first valve at a vertex is written last
    vertex_valve[node_vertex[valves]] = valves
    vertex_source[node_vertex[on[np.isin(kind[on], SOURCE_KINDS)]]] = True

    direction, known = _directions(pipes, network)
    topology = Topology(
        network=network, version=version, snap_m=snap_m, frame=frame, built_s=0.0,
        pipe_id=_column(pipes, 0, np.int64), pipe_source_id=_column(pipes, 1),
        pipe_dataset=_shared(pipes, 2),
        pipe_length_m=pipe_length,
        pipe_diameter_mm=np.array([np.nan if r[3] is None else r[3] for r in pipes], dtype=float),
        pipe_direction=direction, pipe_direction_known=known,
        pipe_owner=_shared(pipes, 9), pipe_lines=lines, pipe_own_piece=own,
        node_id=node_id, node_source_id=_column(nodes, 1), node_dataset=_shared(nodes, 2),
        node_kind=kind, node_state=state, node_operable=operable,
        node_building=_column(nodes, 6, np.int64), node_owner=_shared(nodes, 7),
        node_lonlat=node_ll, node_vertex=node_vertex, node_gap_m=node_gap,
        vertex_xy=vertex_xy, vertex_valve=vertex_valve, vertex_source=vertex_source,
        piece_pipe=piece_pipe, piece_u=piece_u, piece_v=piece_v,
        piece_from=piece_from, piece_to=piece_to, piece_length_m=piece_length,
        piece_segment=np.zeros(0, dtype=np.int64), vertex_segment=np.zeros(0, dtype=np.int64),
        segments=0, segment_source=np.zeros(0, dtype=bool),
        boundary_valve=np.zeros(0, dtype=np.int64), boundary_segment=np.zeros(0, dtype=np.int64),
        baseline_fed=np.zeros(0, dtype=bool),
    )  # fmt: skip
    _segment(topology)
    topology.built_s = time.perf_counter() - started
    return topology


def _node_of(pipes: list[Any], column: int, node_id: np.ndarray) -> np.ndarray:
    """Per pipe, the index of the node its from/to id names (-1: none, or not this network's)."""
    named = np.array([-1 if r[column] is None else r[column] for r in pipes], dtype=np.int64)
    if not len(node_id):
        return np.full(len(pipes), -1, dtype=np.int64)
    i = np.clip(np.searchsorted(node_id, named), 0, len(node_id) - 1)
    return np.where((named >= 0) & (node_id[i] == named), i, -1)


def _directions(pipes: list[Any], network: str) -> tuple[np.ndarray, np.ndarray]:
    """Per pipe, the way water (or gas, or sewage) flows along its line: from the pipe's
    flow direction, else from its inverts (higher to lower); (direction, known)."""
    direction = np.zeros(len(pipes), dtype=np.int8)
    known = np.zeros(len(pipes), dtype=bool)
    for i, r in enumerate(pipes):
        flow, up, down = r[4], r[5], r[6]
        if flow == "forward":
            direction[i], known[i] = 1, True
        elif flow == "backward":
            direction[i], known[i] = -1, True
        elif flow == "both":
            known[i] = True
        elif up is not None and down is not None and up != down:
            direction[i], known[i] = (1 if up > down else -1), True
    return direction, known


def blocking(t: Topology) -> np.ndarray:
    """Per vertex, whether it is a valve that cuts the network: an operable valve, or one
    closed already (a closed valve holds water back whether it can be turned or not)."""
    valve = t.vertex_valve
    out = valve >= 0
    if out.any():
        n = valve[out]
        out[out] = t.node_operable[n] | (t.node_state[n] == "closed")
    return out


def _segment(t: Topology) -> None:
    """Fill the valve segments: components of the graph with blocking valves split."""
    vertices, pieces = len(t.vertex_xy), len(t.piece_pipe)
    cuts = blocking(t)
    # Each piece end at a blocking valve gets a vertex of its own (numbered after the rest).
    u = np.where(cuts[t.piece_u], vertices + np.arange(pieces), t.piece_u)
    v = np.where(cuts[t.piece_v], vertices + pieces + np.arange(pieces), t.piece_v)
    size = vertices + 2 * pieces
    graph = sparse.coo_matrix((np.ones(pieces, dtype=np.int8), (u, v)), shape=(size, size))
    _, label = csgraph.connected_components(graph, directed=False)
    # Segments numbered over pieces only, so vertices without pieces make none.
    numbers, piece_segment = np.unique(label[u], return_inverse=True)
    t.piece_segment = piece_segment.astype(np.int64)
    t.segments = len(numbers)
    lookup = np.full(size, -1, dtype=np.int64)
    lookup[numbers] = np.arange(len(numbers))
    t.vertex_segment = np.where(cuts, -1, lookup[label[:vertices]])
    t.segment_source = np.zeros(t.segments, dtype=bool)
    fed = t.vertex_segment[t.vertex_source & (t.vertex_segment >= 0)]
    t.segment_source[fed] = True
    # A blocking valve's boundaries: the segments of the pieces that touch it.
    at_u, at_v = np.flatnonzero(cuts[t.piece_u]), np.flatnonzero(cuts[t.piece_v])
    valves = np.concatenate([t.piece_u[at_u], t.piece_v[at_v]])
    segs = np.concatenate([t.piece_segment[at_u], t.piece_segment[at_v]])
    pairs = np.unique(np.column_stack([segs, valves]), axis=0) if len(valves) else \
        np.zeros((0, 2), dtype=np.int64)  # fmt: skip
    t.boundary_segment, t.boundary_valve = pairs[:, 0], pairs[:, 1]
    t.baseline_fed = fed_segments(t, closing=np.zeros(0, dtype=np.int64),
                                  removed=np.zeros(0, dtype=np.int64))  # fmt: skip


def fed_segments(t: Topology, *, closing: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Per segment, whether it still reaches a source once the valves ``closing`` are shut
    and the segments ``removed`` are out (closed valves stay closed; an open one joins the
    segments on its sides). A graph of segments and valves: each boundary pair an edge."""
    held = t.__dict__.setdefault("_fed_graph", {})
    if not held:
        valves, number = np.unique(t.boundary_valve, return_inverse=True)
        held["valve_node"] = t.segments + number  # each valve a node after the segments
        held["size"] = t.segments + len(valves)
        held["closed"] = t.node_state[t.vertex_valve[t.boundary_valve]] == "closed"
    usable = ~held["closed"]
    if len(closing):
        usable &= ~np.isin(t.boundary_valve, closing)
    if len(removed):
        usable &= ~np.isin(t.boundary_segment, removed)
    size = held["size"]
    graph = sparse.csr_matrix(
        (np.ones(int(usable.sum()), dtype=np.int8),
         (t.boundary_segment[usable], held["valve_node"][usable])),
        shape=(size, size),
    )  # fmt: skip
    _, label = csgraph.connected_components(graph, directed=False)
    label = label[: t.segments]
    alive = t.segment_source.copy()
    alive[removed] = False
    fed = np.isin(label, np.unique(label[alive]))
    fed[removed] = False
    return fed


# -- the cache ------------------------------------------------------------------------

# Keyed by (data base oid, network, tolerance): one process may serve several data bases.
_cache: dict[tuple[int, str, float], Topology] = {}
_locks: dict[tuple[int, str, float], threading.Lock] = {}
_guard = threading.Lock()


def topology(conn: psycopg.Connection, network: str, snap_m: float) -> Topology:
    """The network's topology as the data base holds it now: the one kept in this process
    when no pipe or node changed since it was built, else built again (once, however many
    requests ask at the same time)."""
    check_network(network)
    version = network_version(conn)
    key = (version[0], network, snap_m)
    held = _cache.get(key)
    if held is not None and held.version == version:
        return held
    with _guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        held = _cache.get(key)
        if held is not None and held.version == network_version(conn):
            return held
        built = build(conn, network, snap_m)
        _give_back_memory()
        while len(_cache) >= MAX_KEPT:  # the oldest first: dicts keep their order
            _cache.pop(next(iter(_cache)))
        _cache[key] = built
        return built


def _give_back_memory() -> None:
    """Hand the memory of the rows a build read back to the system (glibc keeps freed
    small blocks otherwise: some 200 MB after the large city's water network)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def forget() -> None:
    """Drop every topology kept (tests that rebuild a data base under the same process)."""
    _cache.clear()
