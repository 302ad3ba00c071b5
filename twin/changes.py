"""The change log: every write that changes a layer's features says so here, in its own
transaction, and only here.

``record`` does three things at once, so no writer can do one and forget another: it
refreshes the layer's catalogue statistics (count, extent, updated_at), appends a row to
``layer_changes`` with a new version number and the box of what changed, and notifies
listeners (PostgreSQL ``NOTIFY`` on ``CHANNEL``, delivered when the transaction commits;
nothing is heard of a write that rolls back). Tile caches drop the tiles under the box;
the API's catalogue snapshot reloads; rules on sensors will listen too.
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
    if added_only and box is not None:
        query = _RECORD_GROWN
    elif table is not None:
        recount = _RECOUNT.format(table=sql.Identifier(table), geometry=geometry, srid=_SRID)
        query = _RECORD.format(statistics=recount, srid=_SRID)
    else:
        query = _RECORD_STAMPED
    # One statement, one round trip: the log row, the catalogue's version and statistics
    # (one UPDATE of its row: a statement may change a row once) and the notice, which
    # is delivered at the commit. Writers that record often (every intake) pay little.
    row = conn.execute(
        query,
        {
            "layer": layer,
            "operation": operation,
            "dataset": dataset,
            "features": features,
            "channel": CHANNEL,
            **dict(zip(("xmin", "ymin", "xmax", "ymax"), box or (None,) * 4, strict=True)),
        },
    ).fetchone()
    assert row is not None
    return int(row[0])


_SRID = sql.Literal(schema.SRID)
_RECORD = sql.SQL(
    """
    WITH change AS (
        INSERT INTO layer_changes (layer, operation, dataset, features, bbox)
        VALUES (%(layer)s, %(operation)s, %(dataset)s, %(features)s,
                CASE WHEN %(xmin)s::float8 IS NULL THEN NULL ELSE
                ST_SetSRID(ST_Expand(ST_MakeEnvelope(
                    %(xmin)s, %(ymin)s, %(xmax)s, %(ymax)s), 1e-9), {srid}) END)
        RETURNING id, bbox
    ), stamped AS (
        UPDATE layer_catalogue SET version = (SELECT id FROM change) {statistics}
        WHERE name = %(layer)s
    )
    SELECT id, pg_notify(%(channel)s, json_build_object(
        'version', id, 'layer', %(layer)s::text, 'operation', %(operation)s::text,
        'bbox', CASE WHEN bbox IS NULL THEN NULL  -- as stored
                ELSE json_build_array(ST_XMin(bbox), ST_YMin(bbox), ST_XMax(bbox),
                                      ST_YMax(bbox)) END,
        'dataset', %(dataset)s::text, 'features', %(features)s::int)::text)
    FROM change
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
# Composed once: the intake records a change with every report.
_RECORD_GROWN = _RECORD.format(statistics=_GROW, srid=_SRID).as_string()
_RECORD_STAMPED = _RECORD.format(statistics=sql.SQL(""), srid=_SRID).as_string()


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
    wait_s: float = 1.0,
) -> None:
    """Call ``on_change`` for every change committed, until ``stop`` is set.

    Runs in the caller's thread on a connection of its own; ``on_ready`` is called once
    the listening has begun, for the caller to read afresh what it keeps (changes made
    before were not heard). A lost connection raises psycopg.Error: reconnect.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
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
