"""The tile cache: rendered vector tiles kept for every API process, dropped exactly where
the data changed.

Two tiers, and why.

- **Shared, in PostgreSQL** (``tile_cache``, an UNLOGGED table: a cache needs no
  write-ahead log, and a crash that empties it is safe). Every API process, on any host,
  and ``twin tiles seed`` read and fill the same tiles, and the truth they are checked
  against, the change log (``layer_changes``, twin/changes.py), is in the same data base:
  the check is one indexed query beside the lookup, in the same snapshot as the render
  that would replace it. A folder of files would need a shared file system for several
  hosts and could not be checked against the log in one statement.
- **A memory front per process** (a least-recently-used map bounded in bytes): a warm
  tile is answered without a data base round trip, which is what makes a warm tile ten
  times faster than a first one (bench/). It is kept current by the change log's NOTICEs
  (``changes.listen``), heard within milliseconds of each commit, as the catalogue
  snapshot is (twin/registry.py); while the listener is not connected it serves nothing.

Which tiles a change drops. A change of layer L under box B drops every cached tile, at
every zoom, whose layers include L (a collection tile of L, a composite holding L, the
composite of every layer) and whose envelope, the tile grown by the renderer's buffer
(``BUFFER``: a feature within 64/4096 of an edge is drawn in the neighbour too), touches
B. A change with no box (the demo's history) drops every tile of the layer. Nothing else
is dropped: the rest of the city stays warm.

The race. A tile rendered from a snapshot taken before a change committed must not be
served after the change. Change ids are given out when a change is written, not when it
commits, so a version number cannot say what a render saw; the render's snapshot can.
Each cached tile keeps the snapshot of its render (``pg_current_snapshot()``, read in the
render's own REPEATABLE READ transaction), and each change its writer's transaction
(``layer_changes.xact``, migration 0010). A shared tile is served only while no committed
change under its envelope is invisible to its snapshot (``pg_visible_in_snapshot``,
bounded by the index on ``xact``), so a stale entry written by a slow render is refused
even if the change's own drop ran first. In memory, a render notes how many notices it had
heard before its snapshot; it keeps its tile only if none heard since touches it, under
the same lock the listener drops tiles with, so a notice heard after it is kept drops it.

What else a tile depends on. Its content at a moment is its layers' rows (every write is
in the change log) and, for incidents, the clock: an incident turns overdue when a due
time passes, with no write. A tile holding incidents expires at the earliest due time
still ahead among the open incidents under it (``_CLOCK``), so it is rendered afresh
then. Names of categories and units are not in tiles (codes are), so their edits change
no tile.

Bounded: ``TWIN_TILE_MEMORY_MB`` per process and ``TWIN_TILE_CACHE_MB`` for the shared
tier; the least recently used tiles go first. Stores, drops and the shared tier's
"last used" marks are written behind, by a thread of the process, off the request.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import queue
import select
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from isal import igzip
from psycopg import IsolationLevel, sql

from tiles import matrix, vector
from twin import changes, registry
from twin.incidents import intake
from twin.settings import TileCacheSettings

log = logging.getLogger(__name__)

# What the renderer draws beyond a tile's edge, as a share of the tile (64 of 4096).
BUFFER = vector.BUFFER / vector.EXTENT
ALL = "*"  # the layers of the composite tile of every layer
Box = changes.Box
# What runs a tile's one statement: tiles.vector.run (a test slows it, or races it).
Execute = Callable[..., tuple[Any, ...]]
# Bytes a cached tile costs beyond its data (key, ETag, bookkeeping): empty tiles count.
OVERHEAD = 200


@dataclass(frozen=True)
class Key:
    """What a cached tile is: its matrix set, its layers (sorted, or ``(ALL,)``), z/x/y."""

    tms: str
    layers: tuple[str, ...]
    z: int
    x: int
    y: int

    @property
    def tile(self) -> matrix.Tile:
        return matrix.Tile(x=self.x, y=self.y, z=self.z)


def key_for(tms_id: str, layers: Sequence[str] | None, tile: matrix.Tile) -> Key:
    """The key of ``tile`` of ``layers`` (None: the composite of every layer)."""
    named = (ALL,) if layers is None else tuple(sorted(set(layers)))
    return Key(tms_id, named, tile.z, tile.x, tile.y)


@dataclass
class _Entry:
    data: bytes
    etag: str
    expires: float | None  # time.monotonic() after which the tile is stale; None: never
    truncated: tuple[str, ...] = ()  # the layers the renderer's caps cut
    zipped: bytes | None = None  # the gzip representation, made on the first ask

    @property
    def size(self) -> int:
        return len(self.data) + len(self.zipped or b"") + OVERHEAD


@dataclass(frozen=True)
class Cached:
    """A tile as the cache answers it: its bytes (b"" when it holds nothing), its ETag,
    where it came from (``memory``, ``shared`` or ``rendered``) and the layers the
    renderer's caps cut."""

    data: bytes
    etag: str
    source: str
    truncated: tuple[str, ...] = ()
    _entry: _Entry | None = field(default=None, repr=False, compare=False)

    def gzipped(self) -> bytes:
        """The bytes gzipped, made once for a tile kept in memory (a warm answer does not
        compress again)."""
        entry = self._entry
        if entry is not None and entry.zipped is not None:
            return entry.zipped
        # ISA-L's igzip at its level 2: within 3 % of zlib's level 3 at a sixth of its
        # time (a 100 KB street-block tile: 0.20 vs 1.4 ms), which a first request waits on.
        zipped = igzip.compress(self.data, compresslevel=2, mtime=0)
        if entry is not None:
            entry.zipped = zipped  # a few bytes over the memory's count, until evicted
        return zipped


def etag_of(data: bytes) -> str:
    """The strong ETag of a tile's bytes: the same bytes give the same tag in every
    process, so a tile rendered again unchanged keeps its clients' copies valid."""
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'  # as _ETAG


def envelope(tms_id: str, tile: matrix.Tile) -> Box:
    """The tile grown by the renderer's buffer, in the storage CRS (lon/lat): what a
    change must touch to change the tile (a hair more: never a tile too few)."""
    return matrix.lonlat_bounds(tms_id, tile, BUFFER * 1.001)


def _tile_range(tms_id: str, box: Box, z: int) -> tuple[int, int, int, int]:
    """Columns and rows (x0, y0, x1, y1) of the tiles at zoom ``z`` whose envelope touches
    ``box``: the box grown by the buffer of a tile of that zoom."""
    tms = matrix.matrix_set(tms_id)
    west, south, east, north = box
    left, bottom = tms.xy(max(west, -180.0), max(south, -85.0511287798))
    right, top = tms.xy(min(east, 180.0), min(north, 85.0511287798))
    span = (lambda b: b.right - b.left)(tms.xy_bounds(matrix.Tile(0, 0, z)))
    pad = span * BUFFER * 1.001
    west, north = tms.lnglat(left - pad, top + pad)
    east, south = tms.lnglat(right + pad, bottom - pad)
    last = tms.matrix(z)
    ul = tms.tile(max(west, -180.0), min(north, 85.0511287798), z)
    lr = tms.tile(min(east, 180.0), max(south, -85.0511287798), z)
    clamp_x = lambda v: min(max(v, 0), last.matrixWidth - 1)  # noqa: E731
    clamp_y = lambda v: min(max(v, 0), last.matrixHeight - 1)  # noqa: E731
    return (clamp_x(ul.x), clamp_y(ul.y), clamp_x(lr.x), clamp_y(lr.y))


def _boxes_touch(a: Box, b: Box) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _holds(key: Key, layer: str) -> bool:
    return key.layers == (ALL,) or layer in key.layers


def touches(change: changes.Change, key: Key) -> bool:
    """Whether ``change`` may have changed the tile ``key``."""
    if not _holds(key, change.layer):
        return False
    return change.bbox is None or _boxes_touch(change.bbox, envelope(key.tms, key.tile))


@dataclass
class Memory:
    """The per-process front: a least-recently-used map bounded in bytes, indexed by
    place (matrix set, zoom, column, row) so a change finds its tiles without a scan."""

    limit: int
    used: int = 0
    _entries: OrderedDict[Key, _Entry] = field(default_factory=OrderedDict)
    _places: dict[tuple[str, int], dict[tuple[int, int], set[Key]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires is not None and time.monotonic() >= entry.expires:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: Key, entry: _Entry) -> None:
        if entry.size > self.limit:
            return
        if key in self._entries:
            self._remove(key)
        self._entries[key] = entry
        self.used += entry.size
        self._places.setdefault((key.tms, key.z), {}).setdefault((key.x, key.y), set()).add(key)
        while self.used > self.limit:
            self._remove(next(iter(self._entries)))

    def drop(self, change: changes.Change) -> int:
        """Drop the tiles ``change`` may have changed; returns how many."""
        doomed: list[Key] = []
        for (tms_id, z), places in self._places.items():
            if change.bbox is None:
                doomed += [k for keys in places.values() for k in keys]
                continue
            x0, y0, x1, y1 = _tile_range(tms_id, change.bbox, z)
            if (x1 - x0 + 1) * (y1 - y0 + 1) <= len(places):
                found = (
                    places.get((x, y), ()) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)
                )
                doomed += [k for keys in found for k in keys]
            else:
                doomed += [
                    k for (x, y), keys in places.items()
                    if x0 <= x <= x1 and y0 <= y <= y1 for k in keys
                ]  # fmt: skip
        doomed = [k for k in doomed if _holds(k, change.layer)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def clear(self) -> None:
        self._entries.clear()
        self._places.clear()
        self.used = 0

    def _remove(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.used -= entry.size
        place = self._places[(key.tms, key.z)]
        keys = place[(key.x, key.y)]
        keys.discard(key)
        if not keys:
            del place[(key.x, key.y)]
            if not place:
                del self._places[(key.tms, key.z)]


@dataclass(frozen=True)
class _Rendered:
    """A render's result with what the cache keeps beside it."""

    key: Key
    data: bytes
    truncated: tuple[str, ...]
    snapshot: str  # pg_snapshot as text
    expires_at: datetime | None  # when it turns stale (an incident under it falls overdue)


# A shared tile, if there is one still current: no change committed since its snapshot
# touches it (the change's transaction is not visible in the snapshot; only changes from
# transactions from the snapshot's xmin on can be, so the xact index bounds the look).
_UNSEEN = sql.SQL("""
    NOT EXISTS (
        SELECT 1 FROM layer_changes c
        WHERE c.xact >= pg_snapshot_xmin({snapshot})
          AND NOT pg_visible_in_snapshot(c.xact, {snapshot})
          AND (%(all)s OR c.layer = ANY(%(layers)s))
          AND (c.bbox IS NULL OR c.bbox && ST_MakeEnvelope(%(w)s, %(s)s, %(e)s, %(n)s, 4326))
    )
""")
_SNAPSHOT = "SELECT pg_current_snapshot()::text"
# The tile's ETag in SQL, as etag_of makes it in Python.
_ETAG = sql.SQL("""'"' || md5({}) || '"'""")
_PLACE = sql.SQL("""%(tms)s, %(key)s, %(z)s, %(x)s, %(y)s""")
_ENVELOPE = sql.SQL("ST_MakeEnvelope(%(w)s, %(s)s, %(e)s, %(n)s, 4326)")
_ON_CONFLICT = sql.SQL("""
    ON CONFLICT (tms, layers, z, x, y) DO UPDATE SET
        data = EXCLUDED.data, etag = EXCLUDED.etag, bytes = EXCLUDED.bytes,
        truncated = EXCLUDED.truncated,
        snapshot = EXCLUDED.snapshot, envelope = EXCLUDED.envelope,
        expires_at = EXCLUDED.expires_at, rendered_at = now(), used_at = now()
    -- Never an older render over a newer one (a slow render finishing last).
    WHERE pg_snapshot_xmax(t.snapshot) <= pg_snapshot_xmax(EXCLUDED.snapshot)
""")
# A miss, in one statement and so one snapshot (no transaction of its own): the shared
# tile if a current one is there; else the render, which is stored unless the caps cut it
# (the tile is made again then, ranked: tiles.vector.finish), with when it turns stale.
# Rows: hit (data, etag, seconds it stays current, truncated) or made (tile, counts,
# snapshot, expires_at). The render runs only when there is no hit (its NOT EXISTS is a
# one-time filter). Five round trips were a third of a street tile's first request.
_MISS = sql.SQL("""
    WITH hit AS MATERIALIZED (
        SELECT t.data, t.etag, extract(epoch FROM t.expires_at - %(now)s) AS expires_in,
               t.truncated
        FROM tile_cache t
        WHERE t.tms = %(tms)s AND t.layers = %(key)s AND t.z = %(z)s AND t.x = %(x)s
          AND t.y = %(y)s AND (t.expires_at IS NULL OR t.expires_at > %(now)s) AND {unseen}
    ), made AS MATERIALIZED (
        SELECT r.tile, r.counts, pg_current_snapshot() AS snapshot, {clock} AS expires_at
        FROM ({render}) AS r(tile, counts)
        WHERE NOT EXISTS (SELECT 1 FROM hit)
    ), stored AS (
        INSERT INTO tile_cache AS t
            (tms, layers, z, x, y, data, etag, bytes, truncated, snapshot, envelope, expires_at)
        SELECT {place}, m.tile, {etag}, length(m.tile), '{{}}', m.snapshot, {envelope},
               m.expires_at
        FROM made m
        WHERE length(m.tile) <= %(max_bytes)s AND %(max_features)s >= ALL(m.counts)
        {on_conflict}
    )
    SELECT data, etag, expires_in, truncated, NULL::bytea, NULL::bigint[], NULL, NULL
    FROM hit
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, tile, counts, snapshot::text,
           extract(epoch FROM expires_at - %(now)s)
    FROM made
""")
# The same without the shared tier: the render, its snapshot and when it turns stale.
_RENDER = sql.SQL("""
    SELECT NULL::bytea, NULL::text, NULL::numeric, NULL::text[], r.tile, r.counts,
           pg_current_snapshot()::text, extract(epoch FROM {clock} - %(now)s)
    FROM ({render}) AS r(tile, counts)
""")
_NO_CLOCK = sql.SQL("NULL::timestamptz")
# Stored unless a change it did not see is known already (a render of the slow path).
_STORE = (
    sql.SQL("""
    INSERT INTO tile_cache AS t
        (tms, layers, z, x, y, data, etag, bytes, truncated, snapshot, envelope, expires_at)
    SELECT {place}, %(data)s, %(etag)s, %(bytes)s, %(truncated)s, %(snapshot)s::pg_snapshot,
           {envelope}, %(expires_at)s
    WHERE {unseen}
    {on_conflict}
""")
    .format(
        place=_PLACE,
        envelope=_ENVELOPE,
        on_conflict=_ON_CONFLICT,
        unseen=_UNSEEN.format(snapshot=sql.SQL("%(snapshot)s::pg_snapshot")),
    )
    .as_string()
)
# The tiles a batch of changes dropped (each process hears every change: the second
# finds nothing left to delete).
_DROP = """
    DELETE FROM tile_cache
    WHERE (layers && %(layers)s OR layers = '{*}')
      AND envelope && ST_MakeEnvelope(%(w)s, %(s)s, %(e)s, %(n)s, 4326)
"""
_DROP_LAYER = "DELETE FROM tile_cache WHERE layers && %(layers)s OR layers = '{*}'"
_TOUCH = """
    UPDATE tile_cache SET used_at = now()
    FROM unnest(%(tms)s::text[], %(layers)s::text[], %(z)s::int[], %(x)s::int[], %(y)s::int[])
        AS u(tms, layers, z, x, y)
    WHERE tile_cache.tms = u.tms AND tile_cache.layers = string_to_array(u.layers, ',')
      AND tile_cache.z = u.z AND tile_cache.x = u.x AND tile_cache.y = u.y
      AND tile_cache.used_at < now() - interval '30 seconds'
"""
# The least recently used tiles over the limit, oldest first, a batch at a time.
_EVICT = """
    DELETE FROM tile_cache WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM tile_cache ORDER BY used_at LIMIT %(n)s))
    RETURNING bytes + %(overhead)s
"""
_USED = "SELECT coalesce(sum(bytes + %(overhead)s), 0)::bigint, count(*) FROM tile_cache"


def _place_params(key: Key) -> dict[str, Any]:
    w, s, e, n = envelope(key.tms, key.tile)
    return {
        "tms": key.tms, "key": list(key.layers), "z": key.z, "x": key.x, "y": key.y,
        "all": key.layers == (ALL,), "layers": list(key.layers), "w": w, "s": s, "e": e, "n": n,
    }  # fmt: skip


def _holds_incidents(catalogue: registry.Catalogue, names: Sequence[str]) -> bool:
    """Whether a tile of these layers changes with the clock (an incident's overdue)."""
    return any(
        (layer := catalogue.layers.get(name)) is not None and layer.kind == "incident"
        for name in names
    )


def _clock(conn: psycopg.Connection, params: dict[str, Any]) -> datetime | None:
    """When the tile's content turns with the clock (the first incident under it to fall
    overdue after ``params["now"]``). "now" is this process's clock, as the renderer's
    overdue is (tiles.vector), taken before the render: never later."""
    box = (params["w"], params["s"], params["e"], params["n"])
    return intake.next_overdue_at(conn, box, params["now"])


@functools.lru_cache(maxsize=512)
def _miss_statement(render: str, shared: bool, clocked: bool) -> str:
    """``_MISS`` (or ``_RENDER`` without the shared tier) around a render's statement;
    with the incidents' clock (intake.NEXT_OVERDUE) when the tile holds incidents."""
    clock = sql.SQL("({})").format(intake.NEXT_OVERDUE) if clocked else _NO_CLOCK
    if not shared:
        return _RENDER.format(render=sql.SQL(render), clock=clock).as_string()
    return _MISS.format(
        render=sql.SQL(render), clock=clock, place=_PLACE, envelope=_ENVELOPE,
        etag=_ETAG.format(sql.SQL("m.tile")), on_conflict=_ON_CONFLICT,
        unseen=_UNSEEN.format(snapshot=sql.SQL("t.snapshot")),
    ).as_string()  # fmt: skip


def _readable(fileno: int | None) -> bool:
    """Whether the socket has bytes waiting (a notice not yet read by its thread)."""
    if fileno is None:
        return False
    try:
        return bool(select.select([fileno], [], [], 0)[0])
    except (OSError, ValueError):  # closed under us: the listener is reconnecting
        return True


@contextmanager
def _snapshot_transaction(conn: psycopg.Connection) -> Iterator[None]:
    """A REPEATABLE READ transaction on ``conn``: every statement in it, the render's
    included, sees one snapshot, the one the cache records."""
    previous = conn.isolation_level
    conn.isolation_level = IsolationLevel.REPEATABLE_READ
    try:
        with conn.transaction():
            yield
    finally:
        conn.isolation_level = previous


class TileCache:
    """The two tiers, their listener and their writer; one per process.

    ``limits`` are the renderer's (tiles.vector.Limits). ``listen(url)`` starts hearing
    the change log (the memory front serves only while it hears) and the writer that
    stores behind the requests what the miss's own statement did not; without it (``twin
    tiles seed``) those are stored at once.
    """

    def __init__(self, settings: TileCacheSettings, limits: vector.Limits | None = None) -> None:
        self.limits = limits or vector.Limits()
        self.execute: Execute = vector.run
        self.shared = settings.tile_cache_mb > 0
        self.shared_limit = settings.tile_cache_mb * 1024 * 1024
        self.memory = Memory(settings.tile_memory_mb * 1024 * 1024)
        self.stats = {"memory": 0, "shared": 0, "rendered": 0, "dropped": 0}
        self._lock = threading.Lock()
        self._heard = 0  # notices heard since start
        self._recent: deque[tuple[int, changes.Change]] = deque(maxlen=10_000)
        self._generation = 0  # moves each time the listener (re)connects or is lost
        self._live = False  # the listener is connected: the memory front may serve
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._writes: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=10_000)
        self._touched: set[Key] = set()
        self._stored_since_check = 0
        self._listening = threading.Event()
        self._listener: int | None = None  # the listener's socket, polled by from_memory

    # -- the memory front, for the request's thread or the event loop ------------------

    def from_memory(self, key: Key) -> Cached | None:
        """The tile from this process's memory, without a connection; None when it is
        not there (or the listener is not connected, so a change may be unheard)."""
        with self._lock:
            if not self._live or _readable(self._listener):
                # A notice has come and is not heard yet: it may drop this very tile.
                return None
            entry = self.memory.get(key)
            if entry is None:
                return None
            self.stats["memory"] += 1
            self._touched.add(key)
        return Cached(entry.data, entry.etag, "memory", entry.truncated, entry)

    # -- a tile, through both tiers ---------------------------------------------------

    def tile(
        self,
        conn: psycopg.Connection,
        catalogue: registry.Catalogue,
        tms_id: str,
        layers: Sequence[str] | None,
        tile: matrix.Tile,
        *,
        timed: bool = False,
    ) -> Cached:
        """The tile of ``layers`` (None: every feature layer) at ``tile``: from memory,
        from the shared tier, or rendered (and kept). ``conn`` must be idle, in autocommit;
        ``timed``: its ``statement_timeout`` is the tile's limit already (tiles.vector.run)."""
        key = key_for(tms_id, layers, tile)
        found = self.from_memory(key)
        if found is not None:
            return found
        with self._lock:
            mark, generation = self._heard, self._generation
        found, expires, rendered = self._lookup_or_render(conn, catalogue, key, timed)
        if rendered is not None:
            if self._threads:
                self._enqueue("store", rendered)
            elif self.shared:
                self._store(conn, rendered)
        entry = _Entry(found.data, found.etag, expires, found.truncated)
        self._keep(key, entry, mark, generation)
        found = replace(found, _entry=entry)  # its gzip made once, kept with it
        with self._lock:
            self.stats[found.source] += 1
            if found.source == "shared":
                self._touched.add(key)
        return found

    def fill(
        self,
        conn: psycopg.Connection,
        catalogue: registry.Catalogue,
        tms_id: str,
        layers: Sequence[str] | None,
        tile: matrix.Tile,
    ) -> Cached:
        """The tile put in the shared tier now (``twin tiles seed``): ``shared`` when a
        current one was there already, else ``rendered`` and stored."""
        key = key_for(tms_id, layers, tile)
        found, _, rendered = self._lookup_or_render(conn, catalogue, key, False)
        if rendered is not None and self.shared:
            self._store(conn, rendered)
        return found

    def _lookup_or_render(
        self, conn: psycopg.Connection, catalogue: registry.Catalogue, key: Key, timed: bool
    ) -> tuple[Cached, float | None, _Rendered | None]:
        """The shared tile if a current one is there, else one rendered (and stored by the
        same statement), in one snapshot; with when it turns stale (time.monotonic(),
        None: never) and, when the caps cut it and it was made again, what the shared
        tier is still to keep of it."""
        names = (
            [layer.name for layer in catalogue.feature_layers()]
            if key.layers == (ALL,)
            else list(key.layers)
        )
        started, now = time.monotonic(), datetime.now(UTC)
        first = vector.first_try(conn, catalogue, names, key.tile, limits=self.limits, now=now)
        clocked = _holds_incidents(catalogue, first.shown)
        params = {
            **first.params, **_place_params(key), "now": now,
            "max_bytes": self.limits.max_bytes, "max_features": self.limits.max_features,
        }  # fmt: skip
        statement = _miss_statement(first.text, self.shared, clocked)
        row = self.execute(conn, statement, params, self.limits, key.tile, first.prepare,
                           timed=timed)  # fmt: skip
        data, etag, expires_in, truncated, made, counts, snapshot, stale_in = row

        def later(seconds: Any) -> float | None:  # time.monotonic() then; None: never
            return None if seconds is None else started + float(seconds)

        if data is not None:
            found = Cached(bytes(data), etag, "shared", tuple(truncated or ()))
            return found, later(expires_in), None
        body, counts = bytes(made or b""), list(counts)
        if not first.cut(body, counts):  # stored already, when there is a shared tier
            return Cached(body, etag_of(body), "rendered"), later(stale_in), None
        # Cut by the caps: made again, ranked, in a snapshot of its own, and stored after.
        with _snapshot_transaction(conn):
            snapshot = conn.execute(_SNAPSHOT).fetchone()[0]  # type: ignore[index]
            done = vector.finish(conn, catalogue, first, body, counts, key.tile, timed=timed)
            clock = _clock(conn, params) if clocked else None
        body, cut = done.data, tuple(done.truncated)
        expires = later(None if clock is None else (clock - now).total_seconds())
        rendered = _Rendered(key, body, cut, snapshot, clock)
        return Cached(body, etag_of(body), "rendered", cut), expires, rendered

    def _keep(self, key: Key, entry: _Entry, mark: int, generation: int) -> None:
        """Put a tile in memory unless a change heard since ``mark`` touches it (its
        render may not have seen that change) or the listener reconnected since."""
        with self._lock:
            if not self._live or generation != self._generation:
                return
            if self._heard > mark:
                if not self._recent or self._recent[0][0] > mark + 1:
                    return  # some of what was heard is forgotten: cannot tell
                if any(n > mark and touches(c, key) for n, c in self._recent):
                    return
            self.memory.put(key, entry)

    # -- the shared tier ----------------------------------------------------------------

    def _store(self, conn: psycopg.Connection, rendered: _Rendered) -> None:
        params = {
            **_place_params(rendered.key),
            "data": rendered.data, "etag": etag_of(rendered.data),
            "bytes": len(rendered.data), "truncated": list(rendered.truncated),
            "snapshot": rendered.snapshot, "expires_at": rendered.expires_at,
        }  # fmt: skip
        conn.execute(_STORE, params)
        self._stored_since_check += 1

    def drop_shared(self, conn: psycopg.Connection, batch: Sequence[changes.Change]) -> int:
        """Delete the shared tiles the changes dropped (reads refuse them already; this
        frees their room). Returns how many went."""
        gone = 0
        for change in batch:
            params: dict[str, Any] = {"layers": [change.layer]}
            if change.bbox is None:
                gone += conn.execute(_DROP_LAYER, params).rowcount
            else:
                w, s, e, n = change.bbox
                gone += conn.execute(_DROP, {**params, "w": w, "s": s, "e": e, "n": n}).rowcount
        return gone

    def evict(self, conn: psycopg.Connection) -> int:
        """Delete the least recently used shared tiles until they fit the limit (with a
        tenth to spare); returns how many went."""
        row = conn.execute(_USED, {"overhead": OVERHEAD}).fetchone()
        used, count = (int(row[0]), int(row[1])) if row else (0, 0)
        gone = 0
        while used > self.shared_limit and count > 0:
            # As many of the oldest as the excess is worth, at the average size.
            excess = used - int(self.shared_limit * 0.9)
            batch = min(5000, max(1, -(-excess * count // used)))
            freed = [int(r[0]) for r in conn.execute(_EVICT, {"n": batch, "overhead": OVERHEAD})]
            if not freed:
                break
            used -= sum(freed)
            count -= len(freed)
            gone += len(freed)
        return gone

    def clear(self, conn: psycopg.Connection, layers: Sequence[str] | None = None) -> int:
        """Delete the shared tiles (of ``layers`` only, when given); returns how many."""
        with self._lock:
            self.memory.clear()
        if layers is None:
            return conn.execute("DELETE FROM tile_cache").rowcount
        return conn.execute(_DROP_LAYER, {"layers": list(layers)}).rowcount

    # -- hearing the change log, writing behind ---------------------------------------

    def listen(self, url: str) -> None:
        """Hear the change log and write behind, in threads of their own, until ``close``."""
        for name, target in (
            ("tile-cache-listener", self._listen),
            ("tile-cache-writer", self._write),
        ):
            thread = threading.Thread(target=target, args=(url,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop hearing and writing (what is queued is written first)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until what was queued for the shared tier is written."""
        deadline = time.monotonic() + timeout
        while self._writes.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def heard(self, change: changes.Change) -> None:
        """A change committed: drop its tiles from memory now, from the shared tier soon."""
        with self._lock:
            self._heard += 1
            self._recent.append((self._heard, change))
            self.stats["dropped"] += self.memory.drop(change)
        if self.shared and self._threads:
            self._enqueue("drop", change)

    def wait_listening(self, timeout: float = 10.0) -> bool:
        """Wait until the listener hears the change log (the memory front serves)."""
        return self._listening.wait(timeout)

    def _on_socket(self, fileno: int) -> None:
        with self._lock:
            self._listener = fileno

    def _connected(self) -> None:
        with self._lock:
            self.memory.clear()  # what was missed while away is unknown
            self._generation += 1
            self._live = True
        self._listening.set()

    def _lost(self) -> None:
        self._listening.clear()
        with self._lock:
            self._live = False
            self._listener = None
            self._generation += 1
            self.memory.clear()

    def _listen(self, url: str) -> None:
        while not self._stop.is_set():
            try:
                changes.listen(url, self.heard, self._stop, on_ready=self._connected,
                               on_socket=self._on_socket, wait_s=0.5)  # fmt: skip
            except psycopg.Error as exc:
                log.warning("tile cache listener lost its connection (%s); reconnecting", exc)
                self._stop.wait(1.0)
            finally:
                self._lost()

    def _enqueue(self, kind: str, item: Any) -> None:
        try:
            self._writes.put_nowait((kind, item))
        except queue.Full:  # the shared tier is behind: this tile is rendered again later
            log.warning("tile cache writer is behind; a %s was skipped", kind)

    def _write(self, url: str) -> None:
        conn: psycopg.Connection | None = None
        last_touch = last_check = time.monotonic()
        while not (self._stop.is_set() and self._writes.empty()):
            try:
                batch = [self._writes.get(timeout=0.2)]
            except queue.Empty:
                batch = []
            while len(batch) < 200:
                try:
                    batch.append(self._writes.get_nowait())
                except queue.Empty:
                    break
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(url, autocommit=True)
                now = time.monotonic()
                drops = [item for kind, item in batch if kind == "drop"]
                if drops:
                    self.drop_shared(conn, drops)
                for kind, item in batch:
                    if kind == "store":
                        self._store(conn, item)
                if now - last_touch > 10:
                    last_touch = now
                    self._touch(conn)
                if self._stored_since_check > 500 or now - last_check > 30:
                    last_check, self._stored_since_check = now, 0
                    self.evict(conn)
            except psycopg.Error as exc:
                # Best effort: a store lost is a render later; a drop lost is refused on
                # read all the same (reads check the change log).
                log.warning("tile cache writer: %s", exc)
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(1.0)
            finally:
                for _ in batch:
                    self._writes.task_done()
        if conn is not None:
            conn.close()

    def _touch(self, conn: psycopg.Connection) -> None:
        with self._lock:
            touched, self._touched = self._touched, set()
        if not touched:
            return
        keys = list(touched)
        conn.execute(
            _TOUCH,
            {
                "tms": [k.tms for k in keys], "layers": [",".join(k.layers) for k in keys],
                "z": [k.z for k in keys], "x": [k.x for k in keys], "y": [k.y for k in keys],
            },
        )  # fmt: skip
