"""The layer registry: one description of every layer, built-in or scene, and one resolver
that every part asks (features, spatial questions, datasets, imports, and the tiles,
incidents and networks to come).

A built-in layer's description is written here, once; a scene's is read from its
catalogue row (``layers.scenes`` registers it). Nothing outside this module decides a
layer's table, id column, natural key, summary or elevation column from its name.

``Snapshot`` keeps the catalogue in memory for a long-running process (the API) and
reloads it when the change log says a layer changed (``twin.changes``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import Boolean, DateTime, Double, Integer, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import BigInteger

from twin import changes, schema
from twin.errors import InvalidInput, NotFound

log = logging.getLogger(__name__)

# What a scene may be called; its table is "scene_" and the name, made here and only here.
SCENE_NAME = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
SCENE_TABLE = re.compile(r"^scene_[a-z][a-z0-9_]{1,39}$")
# Every scene table has these columns (layers.scenes makes them), as JSON types.
SCENE_COLUMNS = {
    "id": "integer", "dataset": "string", "source_id": "string", "properties": "object",
    "updated_at": "string", "geom": "geometry",
}  # fmt: skip
_GEOMETRY_NAMES = {
    "POINT": "Point", "LINESTRING": "LineString", "POLYGON": "Polygon",
    "MULTIPOINT": "MultiPoint", "MULTILINESTRING": "MultiLineString",
    "MULTIPOLYGON": "MultiPolygon",
}  # fmt: skip
_FAMILIES = {
    "Point": "point", "MultiPoint": "point", "LineString": "line", "MultiLineString": "line",
    "Polygon": "polygon", "MultiPolygon": "polygon", "Raster": "raster",
}  # fmt: skip


@dataclass(frozen=True)
class Elevation:
    """A height a layer takes from the terrain where its file gave none: the column, and
    the SQL expression of the point sampled (a constant of this module, never input)."""

    column: str
    point: str = "f.geom"


@dataclass(frozen=True)
class Tiling:
    """How a layer shows in vector tiles at each zoom (``tiles.vector`` draws it so).

    From ``full_zoom`` up every feature is in its tiles as stored. Below it the layer is
    generalised: simplified to the pixel grid, and features smaller than a pixel dropped.
    Below ``merge_below`` its features are merged by cells of the pixel grid, one feature
    a cell with their ``count``: points as a cluster at their mean, lines and polygons as
    the block they cover (the cell's features' envelope). Below ``min_zoom`` the layer is
    not in tiles at all: at that scale it would be noise. ``rank`` says which features a
    tile keeps first when the feature cap bites (``tiles.vector.RANKS``): ``area``,
    ``length``, ``diameter``, ``incident`` (overdue, then the most urgent) or ``id``. A
    merged feature carries the mean of each number, the count of each flag that is true
    (``online_count``) and the most common value of each text in ``merge_keep``.
    ``thin`` drops the minor features at small scales: ``(zoom, least)`` pairs, below
    ``zoom`` only features whose ``thin_column`` is at least ``least`` (or unknown) are
    drawn, as a utility map shows service pipes only at street scale."""

    min_zoom: int = 0
    merge_below: int = 0
    full_zoom: int = 15
    rank: str = "id"
    merge_keep: tuple[str, ...] = ()
    thin_column: str | None = None
    thin: tuple[tuple[int, float], ...] = ()

    def least(self, zoom: int) -> float | None:
        """The least ``thin_column`` a feature needs to be drawn at ``zoom`` (None: all)."""
        below = [least for until, least in self.thin if zoom < until]
        return max(below) if below and self.thin_column else None


# Scenes say nothing of their tiles: drawn by their geometry's family.
SCENE_TILING = {
    "point": Tiling(merge_below=12, full_zoom=12),
    "line": Tiling(rank="length"),
    "polygon": Tiling(rank="area"),
}


@dataclass(frozen=True)
class Layer:
    """Everything the one map knows of a layer, for every part that serves it."""

    name: str
    kind: str  # building, public_space, pipe, pipe_node, sensor, jurisdiction, unit, scene,
    # terrain, incident
    table: str
    title: str = ""
    description: str = ""
    geometry_type: str = ""  # as GeoJSON names it: MultiPolygon, LineString, Point …
    id_column: str = "id"  # the column that names a feature in every answer
    key: tuple[str, ...] = ("dataset", "source_id")  # what a re-import matches on
    summary: tuple[str, ...] = ()  # what a person wants to see of a feature; () for scenes
    # The properties a vector tile carries (never personal data): columns, or the names
    # tiles.vector computes (an incident's overdue and priority).
    tile: tuple[str, ...] = ()
    tiling: Tiling = Tiling()
    elevation: Elevation | None = None
    references: dict[str, str] = field(default_factory=dict)  # column -> layer it refers to
    # Columns naming a feature of any layer (its layer's name, its id): a sensor's asset.
    asset_reference: tuple[str, str] | None = None
    # Rows that are parents of other rows of the layer: the level column and its levels,
    # highest first (a parent may not go before its children).
    hierarchy: tuple[str, tuple[str, ...]] | None = None
    columns: dict[str, str] = field(default_factory=dict)  # column -> JSON type, table order
    # Columns no public answer shows (personal data, secrets): left out of the features
    # API's properties, queryables and filters, and of the catalogue's property schema.
    hidden: tuple[str, ...] = ()
    # Whether features come from providers' files and the demo (imports, datasets); the
    # incidents are written by intake alone.
    imported: bool = True
    properties: dict[str, Any] = field(default_factory=dict)  # a scene's declared properties
    model: type[schema.Base] | None = None

    @property
    def family(self) -> str:
        """``polygon``, ``line``, ``point``, or ``raster`` (terrain)."""
        return _FAMILIES.get(self.geometry_type, "polygon")

    @property
    def builtin(self) -> bool:
        """Whether the layer is one of the one map's own (not a scene, not terrain)."""
        return self.name in BUILTIN

    @property
    def has_features(self) -> bool:
        """Whether the layer holds features (terrain is a raster)."""
        return self.kind != "terrain"

    @property
    def public_columns(self) -> dict[str, str]:
        """The columns a public answer may show, with their JSON types, in table order."""
        return {c: t for c, t in self.columns.items() if c not in self.hidden}

    @property
    def time_column(self) -> str | None:
        """The column that says when a feature last changed, if the table keeps one."""
        return next((c for c in ("latest_at", "updated_at") if c in self.columns), None)


def _json_type(column_type: object) -> str:
    if isinstance(column_type, Boolean):
        return "boolean"
    if isinstance(column_type, Integer | BigInteger):
        return "integer"
    if isinstance(column_type, Double):
        return "number"
    if isinstance(column_type, JSONB):
        return "object"
    if isinstance(column_type, DateTime):
        return "string"  # RFC 3339 date-time
    if isinstance(column_type, Text):
        return "string"
    return "geometry" if type(column_type).__name__ == "Geometry" else "string"


def _builtin(name: str, kind: str, model: type[schema.Base], title: str, description: str,
             **facts: Any) -> Layer:  # fmt: skip
    table = model.__table__
    geometry = str(table.c.geom.type.geometry_type).upper()  # type: ignore[attr-defined]
    return Layer(
        name=name,
        kind=kind,
        table=str(model.__tablename__),
        title=title,
        description=description,
        geometry_type=_GEOMETRY_NAMES[geometry],
        columns={c.name: _json_type(c.type) for c in table.columns},
        model=model,
        **facts,
    )


# In the order they are loaded: a layer after those it refers to.
BUILTIN_LAYERS: tuple[Layer, ...] = (
    _builtin(
        "jurisdictions", "jurisdiction", schema.Jurisdiction, "Jurisdictions 管辖区域",
        "City, district, street, grid and community boundaries.",
        id_column="code", key=("code",), summary=("code", "name", "level"),
        tile=("code", "name", "level", "parent_code"), tiling=Tiling(rank="area"),
        references={"parent_code": "jurisdictions"},
        hierarchy=("level", schema.JURISDICTION_LEVELS),
    ),
    _builtin(
        "units", "unit", schema.Unit, "Units 责任单位",
        "Departments, teams and centres that handle incidents.",
        id_column="code", key=("code",),
        summary=("code", "name", "kind", "jurisdiction_code", "phone"),
        tile=("code", "name", "kind", "jurisdiction_code"),
        tiling=Tiling(merge_below=10, full_zoom=10, merge_keep=("kind",)),
        references={"jurisdiction_code": "jurisdictions"},
    ),
    _builtin(
        "buildings", "building", schema.Building, "Buildings 城市楼宇",
        "Building footprints with height, floors, use and address.",
        summary=("name", "address", "use", "height_m", "floors", "owner_unit"),
        tile=("name", "use", "height_m", "floors", "base_elevation_m"),
        # A city's buildings as blocks below z13 (a z10 tile would hold all of them).
        tiling=Tiling(min_zoom=8, merge_below=13, full_zoom=15, rank="area", merge_keep=("use",)),
        elevation=Elevation("base_elevation_m", "ST_PointOnSurface(f.geom)"),
    ),
    _builtin(
        "public_spaces", "public_space", schema.PublicSpace, "Public space 公共空间",
        "Parks, squares, roads, water, green and plazas.",
        summary=("kind", "name", "owner_unit"), tile=("kind", "name"),
        tiling=Tiling(rank="area"),
    ),
    _builtin(
        "pipe_nodes", "pipe_node", schema.PipeNode, "Pipe nodes 管网节点",
        "Valves, hydrants, manholes, junctions, sources and service connections.",
        summary=("network", "kind", "state", "depth_m", "owner_unit"),
        tile=("network", "kind", "state", "operable", "depth_m", "ground_elevation_m",
              "owner_unit"),
        # Valves and hydrants are street-scale: clusters at z12-13, each from z14.
        tiling=Tiling(min_zoom=12, merge_below=14, full_zoom=14, merge_keep=("network", "kind")),
        elevation=Elevation("ground_elevation_m"),
        references={"building_id": "buildings"},
    ),
    _builtin(
        "pipes", "pipe", schema.Pipe, "Pipes 地下管网",
        "Underground pipes of every network, with diameter, material and depth.",
        summary=("network", "diameter_mm", "material", "depth_m", "status", "owner_unit"),
        tile=("network", "diameter_mm", "material", "depth_m", "status", "flow_direction",
              "owner_unit"),
        # Mains first; service connections (under 100 mm) from street scale, distribution
        # pipes (under 300 mm) from z13.
        tiling=Tiling(min_zoom=11, full_zoom=15, rank="diameter", thin_column="diameter_mm",
                      thin=((15, 100), (13, 300))),
        references={"from_node_id": "pipe_nodes", "to_node_id": "pipe_nodes"},
    ),
    _builtin(
        "sensors", "sensor", schema.Sensor, "Sensors 物联感知设备",
        "IoT sensing devices with thresholds and their latest reading.",
        key=("device_id",), asset_reference=("asset_layer", "asset_id"),
        summary=("device_id", "kind", "unit_of_measure", "latest_value", "online", "owner_unit"),
        tile=("device_id", "kind", "unit_of_measure", "latest_value", "latest_at", "online",
              "threshold_low", "threshold_high", "elevation_m"),
        tiling=Tiling(min_zoom=10, merge_below=13, full_zoom=13, merge_keep=("kind",)),
        elevation=Elevation("elevation_m"),
    ),
    _builtin(
        "incidents", "incident", schema.Incident, "Incidents 事件",
        "Reports from every channel, where they are, what they concern and who has them "
        "(no reporter's data).",
        key=("id",), imported=False,
        # The reporter's contacts, the resident's secret token and the retry key are
        # never public; a description is free text a resident typed (names, numbers).
        hidden=("reporter", "tracking_token", "idempotency_key", "payload_hash", "description"),
        summary=("category_code", "status", "channel", "unit_code", "escalated", "outside",
                 "reported_at", "due_response_at", "due_resolve_at"),
        tile=("category_code", "status", "channel", "unit_code", "escalated", "outside",
              "reported_at", "due_response_at", "due_resolve_at", "overdue", "priority"),
        tiling=Tiling(merge_below=12, full_zoom=12, rank="incident", merge_keep=("status",)),
        references={"unit_code": "units", "duplicate_of": "incidents"},
    ),
)  # fmt: skip
BUILTIN = {layer.name: layer for layer in BUILTIN_LAYERS}
# The layers providers' files and the demo fill, in load order.
IMPORTED_LAYERS: tuple[Layer, ...] = tuple(layer for layer in BUILTIN_LAYERS if layer.imported)


def scene_table(name: str) -> str:
    """The table of a scene called ``name`` (a name SCENE_NAME allows)."""
    if not SCENE_NAME.match(name):
        raise InvalidInput(
            f"scene name {name[:60]!r}: use 2-40 lower-case letters, digits or _, starting "
            "with a letter"
        )
    return f"scene_{name}"


def _from_row(row: dict[str, Any]) -> Layer | None:
    """The layer a catalogue row describes; None for a row no layer can be made of (a
    scene whose table name was tampered with)."""
    builtin = BUILTIN.get(row["name"])
    if builtin is not None:
        return builtin
    if row["kind"] == "terrain":
        return Layer(
            name=row["name"], kind="terrain", table=row["table_name"], title=row["title"],
            description=row["description"], geometry_type="Raster",
        )  # fmt: skip
    if row["kind"] != "scene" or not SCENE_TABLE.match(row["table_name"]):
        return None
    properties = dict((row.get("property_schema") or {}).get("properties", {}))
    return Layer(
        name=row["name"],
        kind="scene",
        table=row["table_name"],
        title=row["title"],
        description=row["description"],
        geometry_type=row["geometry_type"],
        columns=dict(SCENE_COLUMNS),
        properties=properties,
        # A scene's tiles carry its declared properties (no scene column is personal).
        tile=tuple(properties),
        tiling=SCENE_TILING[_FAMILIES.get(row["geometry_type"], "polygon")],
    )


# A layer's statistics are its catalogue row's with what the frequent writers (intake,
# dispatch, the closed loop) added beside it in layer_catalogue_deltas (twin.changes says
# why): count the sum, extent the union, version and updated_at the latest. Read in the
# same snapshot, so exact at every commit.
_ENTRY_SQL = """
    SELECT name, title, description, kind, table_name, geometry_type, property_schema,
           provider, owner_unit, licence, update_cadence, source_crs,
           (c.feature_count + coalesce(d.features, 0))::bigint AS feature_count,
           CASE WHEN c.extent IS NULL AND d.west IS NULL THEN NULL ELSE
               ARRAY[least(ST_XMin(c.extent), d.west), least(ST_YMin(c.extent), d.south),
                     greatest(ST_XMax(c.extent), d.east), greatest(ST_YMax(c.extent), d.north)]
           END AS bbox,
           greatest(c.updated_at, d.updated_at) AS updated_at,
           greatest(c.version, d.version) AS version
    FROM layer_catalogue AS c LEFT JOIN LATERAL (
        SELECT sum(features) AS features, min(west) AS west, min(south) AS south,
               max(east) AS east, max(north) AS north, max(version) AS version,
               max(updated_at) AS updated_at
        FROM layer_catalogue_deltas WHERE layer = c.name
    ) AS d ON true
"""


@dataclass(frozen=True)
class Catalogue:
    """The catalogue at one moment: each layer's description and its entry (statistics
    and inventory terms, as ``twin.catalogue`` lists them)."""

    layers: dict[str, Layer]
    entries: dict[str, dict[str, Any]]
    version: int  # the latest change when it was read
    read_at: datetime | None = None

    def layer(self, name: str) -> Layer:
        """The layer called ``name``; NotFound naming the layers there are."""
        layer = self.layers.get(name)
        if layer is None:
            shown = name.replace("\x00", "")[:63]
            raise NotFound(f"no layer named {shown!r} (there are: {', '.join(self.layers)})")
        return layer

    def entry(self, name: str) -> dict[str, Any]:
        """The catalogue entry of the layer called ``name``; NotFound otherwise."""
        self.layer(name)
        return self.entries[name]

    def feature_layers(self) -> list[Layer]:
        """Every layer that holds features, built-ins first, then scenes by name."""
        return [layer for layer in self.layers.values() if layer.has_features]


def load(conn: psycopg.Connection) -> Catalogue:
    """The catalogue as it is now: one query."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = list(cur.execute(_ENTRY_SQL + " ORDER BY kind = 'scene', name"))
    layers: dict[str, Layer] = {}
    entries: dict[str, dict[str, Any]] = {}
    for row in rows:
        layer = _from_row(row)
        if layer is not None:
            layers[layer.name] = layer
            entries[layer.name] = row
    version = max((int(row["version"]) for row in rows), default=0)
    return Catalogue(layers, entries, version)


def resolve(conn: psycopg.Connection, name: str) -> Layer:
    """The layer called ``name``: a built-in's description without asking the data base,
    a scene's from its catalogue row; NotFound naming the layers there are."""
    builtin = BUILTIN.get(name)
    if builtin is not None:
        return builtin
    if "\x00" not in name:  # PostgreSQL text cannot hold it: no layer is called that
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(_ENTRY_SQL + " WHERE name = %s", (name,)).fetchone()
        layer = _from_row(row) if row is not None else None
        if layer is not None:
            return layer
    names = [r[0] for r in conn.execute("SELECT name FROM layer_catalogue ORDER BY name")]
    shown = name.replace("\x00", "")[:63]
    raise NotFound(f"no layer named {shown!r} (there are: {', '.join(names)})")


def resolve_feature_layers(conn: psycopg.Connection, names: Iterable[str]) -> list[Layer]:
    """The feature layers named, in order; InvalidInput naming every unknown one and the
    layers there are (for questions that take a list of layers)."""
    names = list(names)
    found: list[Layer] = []
    unknown: list[str] = []
    for name in names:
        try:
            layer = resolve(conn, name)
        except NotFound:
            unknown.append(name if SCENE_NAME.match(name) else repr(name.replace("\x00", "")[:40]))
            continue
        if not layer.has_features:
            unknown.append(name)
            continue
        found.append(layer)
    if unknown or not names:
        scenes = [
            r[0] for r in conn.execute(
                "SELECT name FROM layer_catalogue WHERE kind = 'scene' ORDER BY name"
            )
        ]  # fmt: skip
        choices = (
            ", ".join(BUILTIN) + ", or a scene" + (f" ({', '.join(scenes)})" if scenes else "")
        )
        if not names:
            raise InvalidInput(f"layers: name at least one layer ({choices})")
        raise InvalidInput(f"unknown layer(s) {', '.join(unknown)}; choose from {choices}")
    return found


class Snapshot:
    """The catalogue held in memory by a long-running process, reloaded on the next ask
    after the change log says a layer changed (or the listener lost its connection).

    ``get`` never serves a catalogue older than the last notice heard; a write made by
    this process calls ``invalidate`` itself, so its own next answer is current.
    """

    def __init__(self) -> None:
        self._catalogue: Catalogue | None = None
        self._stale = True
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listeners: list[Callable[[changes.Change], None]] = []

    def get(self, conn: psycopg.Connection) -> Catalogue:
        """The catalogue, read afresh on ``conn`` when it changed since last read."""
        catalogue = self._catalogue
        if catalogue is not None and not self._stale:
            return catalogue
        with self._lock:
            if self._catalogue is None or self._stale:
                self._stale = False  # before reading: a notice during the read marks it again
                try:
                    self._catalogue = load(conn)
                except BaseException:
                    self._stale = True
                    raise
            return self._catalogue

    def invalidate(self, change: changes.Change | None = None) -> None:
        """Read the catalogue afresh on the next ``get``."""
        self._stale = True
        if change is not None:
            for listener in self.listeners:
                listener(change)

    def listen(self, url: str) -> None:
        """Hear the change log in a thread of its own until ``close``."""
        self._thread = threading.Thread(
            target=self._listen, args=(url,), name="catalogue-listener", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _listen(self, url: str) -> None:
        while not self._stop.is_set():
            try:
                changes.listen(url, self.invalidate, self._stop, on_ready=self.invalidate)
            except psycopg.Error as exc:  # the server went away: reconnect, read afresh
                log.warning("catalogue listener lost its connection (%s); reconnecting", exc)
                self._stale = True
                self._stop.wait(1.0)
