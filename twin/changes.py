"""The change log: every write that changes a layer's features says so here, in its own
transaction, and only here.

``record`` does three things at once, so no writer can do one and forget another: it
refreshes the layer's catalogue statistics (count, extent, updated_at, version), appends a
row to ``layer_changes`` with a new version number and the box of what changed, and
notifies listeners (PostgreSQL ``NOTIFY`` on ``CHANNEL``, delivered when the transaction
commits; nothing is heard of a write that rolls back). Tile caches drop the tiles under
the box; the API's catalogue snapshot reloads; rules on sensors will listen too.

Where the statistics go. Rare writers (imports, deletes, the demo) update the layer's
``layer_catalogue`` row. The frequent ones (``FREQUENT``: every intake, dispatch and step
of the closed loop) only ever add features or move the version, and there are many at
once: on the one catalogue row each would wait for the one before to commit, WAL flush
included (42 % of the intake's data base time at 8 connections, bench/RESULTS.md). They
write to ``layer_catalogue_deltas`` instead, each to a row of the layer no other open
transaction holds (``FOR UPDATE SKIP LOCKED``, a new row when all are held), so they never
wait for one another. The layer's count is the row's plus the deltas' sum, its extent
the union, its version the greatest: twin.registry's one catalogue query adds them, so
what a reader sees is exact at every commit. A recount (a delete, an edit of a layer's
table, the demo) folds the deltas back into the row: it takes the layer's advisory lock
exclusively, the frequent writers share it, so it waits for those in flight and counts
with their work committed, and the ones after it wait for it (as they did on the row).
"""

from __future__ import annotations

import json
import math
import select
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from twin import schema

CHANNEL = "twin_changes"
Box = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in the storage CRS


GEOMETRY = sql.SQL("geom")  # the column that holds a feature's place
OPERATIONS = frozenset(
    {
        "import",
        "edit",
        "delete",
        "demo",
        "elevation",
        "topology",
        "scene_create",
        "scene_drop",
        "intake",
        "dispatch",
    }
)
# The writers that record many small changes at once (a report, a dispatch, a step of the
# closed loop): those that only add features or move the version keep their statistics
# in layer_catalogue_deltas, off the layer's one catalogue row.
FREQUENT = frozenset({"intake", "dispatch", "edit"})


@dataclass(frozen=True)
class Change:
    """One entry of the change log, as listeners receive it."""

    version: int
    layer: str
    operation: str
    bbox: Box | None
    dataset: str | None = None
    features: int = 0

    @classmethod
    def from_payload(cls, payload: str) -> Change:
        """The change a NOTIFY payload describes."""
        data = json.loads(payload)
        bbox = tuple(data["bbox"]) if data.get("bbox") else None
        return cls(
            version=int(data["version"]),
            layer=str(data["layer"]),
            operation=str(data["operation"]),
            bbox=bbox,  # type: ignore[arg-type]
            dataset=data.get("dataset"),
            features=int(data.get("features", 0)),
        )


def record(
    conn: psycopg.Connection,
    layer: str,
    operation: str,
    *,
    box: Box | None,
    dataset: str | None = None,
    features: int = 0,
    added_only: bool = False,
    table: str | None,
    geometry: sql.Composable = GEOMETRY,
) -> int:
    """Record that ``layer``'s features changed under ``box``; return the new version.

    Runs in the caller's transaction, so the statistics, the log and the notice stand or
    fall with the write itself. ``box`` covers every place that changed, old and new (a
    feature moved is two places); ``None`` when nothing with a place changed.
    ``features`` is how many features the write touched. ``added_only``: the write only
    added those features, all inside ``box``, so the count and extent grow without a scan
    of the table (an import of a million features would otherwise pay for a second pass).
    ``table`` is the layer's table, as the registry says (None for a scene just dropped:
    nothing left to count). ``geometry`` is the SQL that gives a row's place (a raster's
    envelope for terrain), a constant of the caller's.
    """
    if operation not in OPERATIONS:
        raise ValueError(f"not a change operation: {operation!r}")
    if box is not None and not all(math.isfinite(v) for v in box):
        raise ValueError(f"a change box must be finite: {box}")
    grows = added_only and box is not None
    params = {
        "layer": layer,
        "operation": operation,
        "dataset": dataset,
        "features": features,
        "channel": CHANNEL,
        "grows": grows,
        **dict(zip(("xmin", "ymin", "xmax", "ymax"), box or (None,) * 4, strict=True)),
    }
    if operation in FREQUENT and (grows or not table):
        query = _RECORD_DELTA
    elif grows:
        query = _RECORD_GROWN
    elif table is not None:
        # Alone, before the recount's statement: that one's snapshot then holds every
        # frequent writer's work that was in flight, and no later one's.
        conn.execute(_HOLD_EXCLUSIVE, params)
        query = _recount(table, geometry)
    else:
        query = _RECORD_STAMPED
    # One statement, one round trip: the log row, the catalogue's version and statistics
    # (one UPDATE of its row: a statement may change a row once) and the notice, which
    # is delivered at the commit. Writers that record often (every intake) pay little;
    # a recount, rare, pays a round trip more for the lock.
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


_SRID = sql.Literal(schema.SRID)
# The log row, with its box (NULL when nothing with a place changed).
_CHANGE = sql.SQL(
    """
    change AS (
        INSERT INTO layer_changes (layer, operation, dataset, features, bbox)
        SELECT %(layer)s, %(operation)s, %(dataset)s, %(features)s,
               CASE WHEN %(xmin)s::float8 IS NULL THEN NULL ELSE
               ST_SetSRID(ST_Expand(ST_MakeEnvelope(
                   %(xmin)s, %(ymin)s, %(xmax)s, %(ymax)s), 1e-9), {srid}) END
        {after}
        RETURNING id, bbox
    )"""
)
# The notice of the change, delivered at the commit; the statement's answer is the version.
_NOTIFIED = sql.SQL(
    """
    SELECT id, pg_notify(%(channel)s, json_build_object(
        'version', id, 'layer', %(layer)s::text, 'operation', %(operation)s::text,
        'bbox', CASE WHEN bbox IS NULL THEN NULL  -- as stored
                ELSE json_build_array(ST_XMin(bbox), ST_YMin(bbox), ST_XMax(bbox),
                                      ST_YMax(bbox)) END,
        'dataset', %(dataset)s::text, 'features', %(features)s::int)::text)
    FROM change
    """
)
_RECORD = sql.SQL(
    """
    WITH {change}, stamped AS (
        UPDATE layer_catalogue SET version = (SELECT id FROM change) {statistics}
        WHERE name = %(layer)s
    ){folded}
    {notified}
    """
)
# Count a layer's features and take its extent afresh (after deletes and updates).
_RECOUNT = sql.SQL(
    """,
    feature_count = stats.n, extent = stats.extent, updated_at = now()
    FROM (SELECT count(*) AS n,
                 -- Expanded a hair so one point or one line still makes a polygon.
                 ST_SetSRID(ST_Expand(ST_Extent({geometry}), 1e-9)::geometry, {srid}) AS extent
          FROM {table}) AS stats
    """
)
# Count features just added and widen the extent to the change's box, without a scan.
_GROW = sql.SQL(
    """,
    feature_count = feature_count + %(features)s,
    extent = ST_SetSRID(Box2D(ST_Collect(coalesce(extent, envelope.geom),
                                         envelope.geom))::geometry, {srid}),
    updated_at = now()
    FROM (SELECT ST_Expand(ST_MakeEnvelope(%(xmin)s, %(ymin)s, %(xmax)s, %(ymax)s, {srid}),
                           1e-9) AS geom) AS envelope
    """
).format(srid=_SRID)
# The layer's advisory lock (a key from its name; seed 13, the incidents' own locks use 11
# and 12): the frequent writers share it, a recount takes it alone.
_LOCK_KEY = sql.SQL("hashtextextended('layer_catalogue ' || %(layer)s, 13)")
_HOLD_EXCLUSIVE = sql.SQL("SELECT pg_advisory_xact_lock({})").format(_LOCK_KEY).as_string()
# A recount counts every feature: what the deltas held is in its count now. Safe in the
# same statement: no frequent writer is in flight while the recount holds the lock.
_FOLDED = sql.SQL(
    """, folded AS (
        DELETE FROM layer_catalogue_deltas WHERE layer = %(layer)s
    )"""
)
# A frequent writer's statistics: the log row is written once the lock is shared (its
# FROM), then a deltas row of the layer that no open transaction holds is taken, or one
# made (keyed by this backend's pid, which no other live backend has), and grown by the
# features added and the box (expanded a hair, as the catalogue's extent), its version
# set; a change that adds nothing only moves the version, as on the catalogue row.
_HELD = sql.SQL(
    """
    held AS MATERIALIZED (
        SELECT pg_advisory_xact_lock_shared({lock})
    )"""
).format(lock=_LOCK_KEY)
_DELTA = sql.SQL(
    """, free AS MATERIALIZED (
        SELECT shard FROM layer_catalogue_deltas WHERE layer = %(layer)s
        LIMIT 1 FOR UPDATE SKIP LOCKED
    ), grown AS (
        INSERT INTO layer_catalogue_deltas AS d
            (layer, shard, features, west, south, east, north, version, updated_at)
        SELECT %(layer)s, coalesce((SELECT shard FROM free), pg_backend_pid()),
               CASE WHEN %(grows)s THEN %(features)s ELSE 0 END,
               CASE WHEN %(grows)s THEN %(xmin)s::float8 - 1e-9 END,
               CASE WHEN %(grows)s THEN %(ymin)s::float8 - 1e-9 END,
               CASE WHEN %(grows)s THEN %(xmax)s::float8 + 1e-9 END,
               CASE WHEN %(grows)s THEN %(ymax)s::float8 + 1e-9 END,
               id, CASE WHEN %(grows)s THEN now() END
        FROM change
        ON CONFLICT (layer, shard) DO UPDATE SET
            features = d.features + EXCLUDED.features,
            west = least(d.west, EXCLUDED.west), south = least(d.south, EXCLUDED.south),
            east = greatest(d.east, EXCLUDED.east), north = greatest(d.north, EXCLUDED.north),
            version = greatest(d.version, EXCLUDED.version),
            updated_at = coalesce(EXCLUDED.updated_at, d.updated_at)
    )"""
)
# Composed once: the intake records a change with every report.
_RECORD_GROWN = _RECORD.format(
    change=_CHANGE.format(srid=_SRID, after=sql.SQL("")), statistics=_GROW,
    folded=sql.SQL(""), notified=_NOTIFIED,
).as_string()  # fmt: skip
_RECORD_STAMPED = _RECORD.format(
    change=_CHANGE.format(srid=_SRID, after=sql.SQL("")), statistics=sql.SQL(""),
    folded=sql.SQL(""), notified=_NOTIFIED,
).as_string()  # fmt: skip
# A WITH list is not run in its order but as each part is read: "held" is the log row's
# FROM and the log row the deltas row's, so the lock comes first, then the log row, then
# the deltas row (never a deltas row held while waiting for the lock: a recount holding
# it would wait for that row, a deadlock).
_RECORD_DELTA = (
    sql.SQL("WITH {held}, {change}{delta} {notified}")
    .format(
        held=_HELD,
        change=_CHANGE.format(srid=_SRID, after=sql.SQL("FROM held")),
        delta=_DELTA,
        notified=_NOTIFIED,
    )
    .as_string()
)


def _recount(table: str, geometry: sql.Composable) -> sql.Composed:
    """The statement that records a change and counts ``table`` afresh."""
    recount = _RECOUNT.format(table=sql.Identifier(table), geometry=geometry, srid=_SRID)
    return _RECORD.format(
        change=_CHANGE.format(srid=_SRID, after=sql.SQL("")), statistics=recount,
        folded=_FOLDED, notified=_NOTIFIED,
    )  # fmt: skip


MAX_CHANGES = 1000  # in one answer; ask again after the last version given


def changes_since(
    conn: psycopg.Connection, version: int, layer: str | None = None, *, limit: int = MAX_CHANGES
) -> list[Change]:
    """The changes after ``version`` (of one layer, or all), oldest first, at most
    ``limit``: what a listener that was away missed, or what another system must sync."""
    rows = conn.execute(
        """
        SELECT id, layer, operation, dataset, features,
               CASE WHEN bbox IS NULL THEN NULL ELSE
                   ARRAY[ST_XMin(bbox), ST_YMin(bbox), ST_XMax(bbox), ST_YMax(bbox)] END
        FROM layer_changes
        WHERE id > %s AND (%s::text IS NULL OR layer = %s)
        ORDER BY id LIMIT %s
        """,
        (version, layer, layer, limit),
    ).fetchall()
    return [
        Change(int(i), name, op, tuple(bbox) if bbox else None, dataset, int(n))  # type: ignore[arg-type]
        for i, name, op, dataset, n, bbox in rows
    ]


def ever_changed(conn: psycopg.Connection, layer: str) -> bool:
    """Whether the log holds a change of ``layer`` (a scene since dropped included)."""
    row = conn.execute("SELECT 1 FROM layer_changes WHERE layer = %s LIMIT 1", (layer,))
    return row.fetchone() is not None


def latest_version(conn: psycopg.Connection) -> int:
    """The number of the last change of any layer (0 before the first)."""
    row = conn.execute("SELECT coalesce(max(id), 0) FROM layer_changes").fetchone()
    return int(row[0]) if row else 0


def box_of(conn: psycopg.Connection, query: sql.Composable, params: Any = None) -> Box | None:
    """The bounding box of the geometries ``query`` selects (one column), or None when it
    selects none; for a writer to learn where it is about to write or delete."""
    row = conn.execute(
        sql.SQL(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
            " FROM (SELECT ST_Extent(g) AS e FROM ({}) AS q(g)) AS x"
        ).format(query),
        params,
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))


def union(*boxes: Box | None) -> Box | None:
    """The box around all the boxes given (None ones skipped), or None."""
    present = [b for b in boxes if b is not None]
    if not present:
        return None
    return (
        min(b[0] for b in present),
        min(b[1] for b in present),
        max(b[2] for b in present),
        max(b[3] for b in present),
    )


def listen(
    url: str,
    on_change: Callable[[Change], None],
    stop: threading.Event,
    *,
    on_ready: Callable[[], None] | None = None,
    on_socket: Callable[[int], None] | None = None,
    wait_s: float = 1.0,
) -> None:
    """Call ``on_change`` for every change committed, until ``stop`` is set.

    Runs in the caller's thread on a connection of its own; ``on_ready`` is called once
    the listening has begun, for the caller to read afresh what it keeps (changes made
    before were not heard), and ``on_socket`` with the connection's socket, which other
    threads may poll (never read) to see that a notice has come and is not heard yet. A
    lost connection raises psycopg.Error: reconnect.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        if on_socket is not None:
            on_socket(conn.fileno())
        if on_ready is not None:
            on_ready()
        while not stop.is_set():
            for notice in _pending(conn, wait_s):
                on_change(Change.from_payload(notice.payload))


def _pending(conn: psycopg.Connection, wait_s: float) -> Iterator[psycopg.Notify]:
    """The notices that arrived within ``wait_s`` seconds (none when nothing did)."""
    ready, _, _ = select.select([conn.fileno()], [], [], wait_s)
    if not ready:
        return iter(())
    return iter(list(conn.notifies(timeout=0, stop_after=1000)))
