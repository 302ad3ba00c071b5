"""The one schema of the one map: every layer kind as a table, geometries in one CRS.

These models are the truth that alembic migrations are written from
(``twin/migrations/versions``). Kinds are text with CHECK constraints rather than
PostgreSQL enums, so a later migration can add a kind without rewriting a type.
Every geometry column gets a GiST index (GeoAlchemy2 ``spatial_index``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from geoalchemy2 import Geometry, Raster, WKBElement
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import conv

SRID = 4326  # see DESIGN: one CRS; CGCS2000 (4490) matches it to well under a metre

JURISDICTION_LEVELS = ("city", "district", "street", "grid", "community")
PUBLIC_SPACE_KINDS = ("park", "square", "road", "water", "green", "plaza")
PIPE_NETWORKS = ("water", "drainage", "sewage", "gas", "power", "heat", "telecom")
PIPE_STATUSES = ("in_service", "planned", "under_repair", "abandoned")
FLOW_DIRECTIONS = ("forward", "backward", "both", "unknown")
PIPE_NODE_KINDS = (
    "valve",
    "hydrant",
    "manhole",
    "junction",
    "source",
    "tank",
    "service_connection",
)
VALVE_STATES = ("open", "closed")
UNIT_KINDS = ("centre", "department", "street_office", "team", "company")
LAYER_KINDS = (
    "building",
    "public_space",
    "pipe",
    "pipe_node",
    "sensor",
    "jurisdiction",
    "unit",
    "scene",
    "terrain",
    "incident",
)
# Where a report came from (受理渠道).
INCIDENT_CHANNELS = (
    "hotline_12345",
    "grid_inspector",
    "resident_photo",
    "sensor_alarm",
    "camera_ai",
    "external_system",
)
# Who holds an API key (twin/keys.py says what each may do).
KEY_ROLES = (
    "resident",
    "grid_inspector",
    "dispatcher",
    "unit_staff",
    "supervisor",
    "engineer",
    "admin",
    "external",
)
# The closed loop's states; intake sets reported or dispatched, the later steps the rest.
INCIDENT_STATUSES = (
    "reported",
    "dispatched",
    "accepted",
    "in_progress",
    "resolved",
    "closed",
    "cancelled",
    "duplicate",
    "not_our_duty",
)


def _one_of(column: str, values: tuple[str, ...]) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_allowed")


class Base(DeclarativeBase):
    """Declarative base with stable constraint names, so migrations can refer to them."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONB}


class SourcedFeature:
    """Columns every imported feature carries: where it came from, and what was not mapped."""

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    dataset: Mapped[str] = mapped_column(Text, default="", server_default="")
    source_id: Mapped[str | None] = mapped_column(Text)


class OwnedAsset(SourcedFeature):
    """An asset of the city: a feature with the unit that owns it (权属单位), whose
    responsibility rules answer for it wherever it lies (the water company for its mains).

    A unit's code, kept as the provider gave it, with no foreign key: assets come from
    providers before (or without) the units, and an owner not known yet must neither
    reject the features nor fix an order of imports; the import notes owners that are no
    unit's code, and dispatch matches rules on the code."""

    owner_unit: Mapped[str | None] = mapped_column(Text)
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class InventoryTerms:
    """What the data inventory says of a layer and of each of its datasets: who provides
    it, who owns it, on what licence and cadence, in which CRS it came, how much it holds."""

    provider: Mapped[str] = mapped_column(Text, default="", server_default="")
    owner_unit: Mapped[str] = mapped_column(Text, default="", server_default="")
    licence: Mapped[str] = mapped_column(Text, default="", server_default="")
    update_cadence: Mapped[str] = mapped_column(Text, default="", server_default="")
    source_crs: Mapped[str] = mapped_column(Text, default="", server_default="")
    feature_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class LayerCatalogue(InventoryTerms, Base):
    """The data inventory (数据清单): one row per layer, built-in or a street's scene."""

    __tablename__ = "layer_catalogue"
    __table_args__ = (_one_of("kind", LAYER_KINDS),)

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    kind: Mapped[str] = mapped_column(Text)
    table_name: Mapped[str] = mapped_column(Text)
    geometry_type: Mapped[str] = mapped_column(Text)
    property_schema: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    extent: Mapped[WKBElement | None] = mapped_column(
        Geometry("POLYGON", srid=SRID, spatial_index=False)
    )
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The number of the layer's latest change (layer_changes.id): a tile or an answer made
    # at this version is current until the number moves.
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class LayerChange(Base):
    """The change log: one row per write that changed a layer's features, with the box
    of what changed (old places and new). Tile caches drop the tiles under the box;
    listeners hear of it by NOTIFY on the channel twin.changes.CHANNEL.

    No foreign key to the catalogue: a dropped scene's last change outlives its row.
    """

    __tablename__ = "layer_changes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # the new version number
    layer: Mapped[str] = mapped_column(Text, index=True)
    operation: Mapped[str] = mapped_column(Text)  # import, edit, delete, demo, elevation …
    dataset: Mapped[str | None] = mapped_column(Text)
    features: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # NULL: nothing with a place changed (a scene registered with no features yet).
    bbox: Mapped[WKBElement | None] = mapped_column(Geometry("POLYGON", srid=SRID))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LayerCatalogueDelta(Base):
    """What the frequent small writes (an intake, a dispatch, a step of the closed loop)
    added to a layer's catalogue statistics, kept apart from its catalogue row: each writer
    updates a row no other open transaction holds, so concurrent writers do not queue on
    one row through each other's commits. A layer's count is its catalogue row's plus the
    sum of these, its extent the union, its version the greatest (twin.registry reads them
    so); a recount of the layer folds them back into the row (twin.changes)."""

    __tablename__ = "layer_catalogue_deltas"

    layer: Mapped[str] = mapped_column(
        Text,
        ForeignKey("layer_catalogue.name", ondelete="CASCADE", onupdate="CASCADE"),
        primary_key=True,
    )
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    features: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The box of what was added, storage CRS; none for a row only stamped with a version.
    west: Mapped[float | None] = mapped_column(Double)
    south: Mapped[float | None] = mapped_column(Double)
    east: Mapped[float | None] = mapped_column(Double)
    north: Mapped[float | None] = mapped_column(Double)
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DatasetInventory(InventoryTerms, Base):
    """The data inventory per data set (数据清单): each import's source, who provided it
    and on what terms, and how many features it holds now. A layer holds several."""

    __tablename__ = "dataset_inventory"

    layer: Mapped[str] = mapped_column(
        Text,
        ForeignKey("layer_catalogue.name", ondelete="CASCADE", onupdate="CASCADE"),
        primary_key=True,
    )
    dataset: Mapped[str] = mapped_column(Text, primary_key=True)
    source: Mapped[str] = mapped_column(Text, default="", server_default="")  # file name
    imported_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Jurisdiction(Base):
    """A unit of the management hierarchy: city > district > street > grid > community."""

    __tablename__ = "jurisdictions"
    __table_args__ = (_one_of("level", JURISDICTION_LEVELS),)

    code: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    level: Mapped[str] = mapped_column(Text, index=True)
    parent_code: Mapped[str | None] = mapped_column(
        ForeignKey("jurisdictions.code", ondelete="RESTRICT"), index=True
    )
    dataset: Mapped[str] = mapped_column(Text, default="", server_default="")
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    geom: Mapped[WKBElement] = mapped_column(Geometry("MULTIPOLYGON", srid=SRID))


class Unit(Base):
    """A department, team or centre that handles incidents within a jurisdiction."""

    __tablename__ = "units"
    __table_args__ = (_one_of("kind", UNIT_KINDS),)

    code: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    jurisdiction_code: Mapped[str] = mapped_column(
        ForeignKey("jurisdictions.code", ondelete="RESTRICT"), index=True
    )
    phone: Mapped[str | None] = mapped_column(Text)
    dataset: Mapped[str] = mapped_column(Text, default="", server_default="")
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    geom: Mapped[WKBElement | None] = mapped_column(Geometry("POINT", srid=SRID))


def _positive(column: str) -> CheckConstraint:
    # 'Infinity' > every finite double; NaN is greater still in PostgreSQL's order.
    return CheckConstraint(f"{column} > 0 AND {column} < 'Infinity'", name=f"{column}_positive")


class IncidentCategory(Base):
    """A category of incident (事件/部件 class), a tree: the asset layers it concerns and
    how far to look for them, its SLA (hours to respond and to resolve), its priority (1
    the most urgent, 5 the least: 12345's 特急 … 一般 as numbers, which sort and compare),
    and where and when a second report is a duplicate (fusion)."""

    __tablename__ = "incident_categories"
    __table_args__ = (
        _positive("attach_radius_m"),
        _positive("response_hours"),
        _positive("resolve_hours"),
        _positive("fusion_radius_m"),
        _positive("fusion_hours"),
        CheckConstraint("priority BETWEEN 1 AND 5", name="priority_range"),
        CheckConstraint("parent_code IS DISTINCT FROM code", name="not_own_parent"),
    )

    code: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    # No cycles: the import and the core check the whole tree before writing.
    parent_code: Mapped[str | None] = mapped_column(
        # NO ACTION, checked at the end of a statement: a subtree is deleted in one.
        ForeignKey("incident_categories.code", onupdate="CASCADE"),
        index=True,
    )
    asset_layers: Mapped[list[str]] = mapped_column(
        ARRAY(Text), default=list, server_default="{}"
    )  # layer names, as the registry resolves them
    attach_radius_m: Mapped[float] = mapped_column(Double)
    response_hours: Mapped[float] = mapped_column(Double)
    resolve_hours: Mapped[float] = mapped_column(Double)
    priority: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    fusion_radius_m: Mapped[float] = mapped_column(Double, default=50, server_default="50")
    fusion_hours: Mapped[float] = mapped_column(Double, default=24, server_default="24")
    dataset: Mapped[str] = mapped_column(Text, default="", server_default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ResponsibilityRule(Base):
    """A line of the responsibility list (责任清单): incidents of this category (and every
    category under it) in this jurisdiction (and everything inside it) go to this unit;
    with ``asset_owner``, only those whose nearest attached asset that unit owns."""

    __tablename__ = "responsibility_rules"
    __table_args__ = (
        # NULLS NOT DISTINCT: two rules without an owner for one category and place clash.
        UniqueConstraint(
            "category_code", "jurisdiction_code", "asset_owner",
            name=conv("uq_responsibility_rules_rule"),  # the convention's is over 63 bytes
            postgresql_nulls_not_distinct=True,
        ),
    )  # fmt: skip

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    category_code: Mapped[str] = mapped_column(
        ForeignKey("incident_categories.code", ondelete="RESTRICT", onupdate="CASCADE"),
        index=True,
    )
    jurisdiction_code: Mapped[str] = mapped_column(
        ForeignKey("jurisdictions.code", ondelete="RESTRICT", onupdate="CASCADE"), index=True
    )
    asset_owner: Mapped[str | None] = mapped_column(
        ForeignKey("units.code", ondelete="RESTRICT", onupdate="CASCADE")
    )
    unit_code: Mapped[str] = mapped_column(
        ForeignKey("units.code", ondelete="RESTRICT", onupdate="CASCADE"), index=True
    )
    note: Mapped[str] = mapped_column(Text, default="", server_default="")
    dataset: Mapped[str] = mapped_column(Text, default="", server_default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Incident(Base):
    """A reported problem of the city (事件), from any channel: where, what, the
    jurisdiction chain and the assets attached at report time, the unit it went to and
    why, its SLA's due times, and a version for optimistic concurrency.

    ``reporter`` (name, phone, e-mail) is personal data: staff read it, no public answer,
    list, tile or error shows it (the registry's ``hidden`` says so for the features API).
    """

    __tablename__ = "incidents"
    __table_args__ = (
        _one_of("channel", INCIDENT_CHANNELS),
        _one_of("status", INCIDENT_STATUSES),
        Index("ix_incidents_status_reported_at", "status", "reported_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    category_code: Mapped[str] = mapped_column(
        ForeignKey("incident_categories.code", ondelete="RESTRICT", onupdate="CASCADE"),
        index=True,
    )
    channel: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    address: Mapped[str] = mapped_column(Text, default="", server_default="")
    status: Mapped[str] = mapped_column(Text, default="reported", server_default="reported")
    unit_code: Mapped[str | None] = mapped_column(
        ForeignKey("units.code", ondelete="RESTRICT", onupdate="CASCADE"), index=True
    )
    # {rule, how (rule, owner, escalation, manual, none), reason}: why this unit, in words.
    dispatch: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    escalated: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    outside: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    duplicate_of: Mapped[int | None] = mapped_column(
        ForeignKey("incidents.id", ondelete="RESTRICT"), index=True
    )
    # The chain at report time [{code, name, level}], highest first; and the attached
    # assets [{layer, id, source_id, owner_unit, distance_m}], nearest first.
    jurisdictions: Mapped[list[Any]] = mapped_column(JSONB, default=list, server_default="[]")
    assets: Mapped[list[Any]] = mapped_column(JSONB, default=list, server_default="[]")
    due_response_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due_resolve_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    tracking_token: Mapped[str] = mapped_column(Text, unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(Text, unique=True)
    payload_hash: Mapped[str | None] = mapped_column(Text)
    reporter: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    geom: Mapped[WKBElement] = mapped_column(Geometry("POINT", srid=SRID, nullable=False))


class IncidentEvent(Base):
    """The timeline of an incident, append-only: who did what when, from which status to
    which, with a note."""

    __tablename__ = "incident_events"
    __table_args__ = (Index("ix_incident_events_incident_id_id", "incident_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="RESTRICT"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    from_status: Mapped[str | None] = mapped_column(Text)
    to_status: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str] = mapped_column(Text, default="", server_default="")


class IncidentPhoto(Base):
    """A photo of a report (随手拍) or of a step of its timeline, as uploaded (for staff:
    EXIF and GPS included) and as a public copy re-encoded without any metadata. Its id is
    a random token, not a serial: the public copy is served to whoever has the id."""

    __tablename__ = "incident_photos"
    __table_args__ = (
        _one_of("media_type", ("image/jpeg", "image/png", "image/webp")),
        CheckConstraint("width > 0 AND height > 0", name="size"),
        Index("ix_incident_photos_incident_id_created_at", "incident_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="RESTRICT"))
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("incident_events.id", ondelete="RESTRICT")
    )
    media_type: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    original: Mapped[bytes] = mapped_column(LargeBinary)
    original_sha256: Mapped[str] = mapped_column(Text)
    public: Mapped[bytes] = mapped_column(LargeBinary)
    public_sha256: Mapped[str] = mapped_column(Text)
    taken_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("clock_timestamp()")
    )


class ApiKey(Base):
    """An API key, stored as its SHA-256 only, with the role it gives and the scope it
    is held to: a jurisdiction (and everything inside it), and for unit staff their unit."""

    __tablename__ = "api_keys"
    __table_args__ = (
        _one_of("role", KEY_ROLES),
        CheckConstraint("role <> 'unit_staff' OR unit_code IS NOT NULL", name="unit_staff_unit"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    role: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(Text, unique=True)
    shown: Mapped[str] = mapped_column(Text)  # the key's first characters, to tell keys apart
    jurisdiction_code: Mapped[str | None] = mapped_column(
        ForeignKey("jurisdictions.code", ondelete="RESTRICT", onupdate="CASCADE")
    )
    unit_code: Mapped[str | None] = mapped_column(
        ForeignKey("units.code", ondelete="RESTRICT", onupdate="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Building(OwnedAsset, Base):
    """A building (城市楼宇): footprint, height and use."""

    __tablename__ = "buildings"
    __table_args__ = (
        UniqueConstraint("dataset", "source_id"),
        CheckConstraint("height_m IS NULL OR height_m >= 0", name="height_not_negative"),
        CheckConstraint("floors IS NULL OR floors >= 0", name="floors_not_negative"),
    )

    name: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(Text)
    use: Mapped[str | None] = mapped_column(Text)
    height_m: Mapped[float | None] = mapped_column(Double)
    height_estimated: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    floors: Mapped[int | None] = mapped_column(Integer)
    base_elevation_m: Mapped[float | None] = mapped_column(Double)
    geom: Mapped[WKBElement] = mapped_column(Geometry("MULTIPOLYGON", srid=SRID))


class PublicSpace(OwnedAsset, Base):
    """Public space (公共空间): parks, squares, roads, water, green, plazas."""

    __tablename__ = "public_spaces"
    __table_args__ = (UniqueConstraint("dataset", "source_id"), _one_of("kind", PUBLIC_SPACE_KINDS))

    kind: Mapped[str] = mapped_column(Text, index=True)
    name: Mapped[str | None] = mapped_column(Text)
    geom: Mapped[WKBElement] = mapped_column(Geometry("MULTIPOLYGON", srid=SRID))


class PipeNode(OwnedAsset, Base):
    """A node of a pipe network: valve, hydrant, manhole, junction, source, tank, service."""

    __tablename__ = "pipe_nodes"
    __table_args__ = (
        UniqueConstraint("dataset", "source_id"),
        _one_of("network", PIPE_NETWORKS),
        _one_of("kind", PIPE_NODE_KINDS),
        CheckConstraint("state IS NULL OR state IN ('open', 'closed')", name="state_allowed"),
        Index("ix_pipe_nodes_network_kind", "network", "kind"),
    )

    network: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    state: Mapped[str | None] = mapped_column(Text)
    operable: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    depth_m: Mapped[float | None] = mapped_column(Double)
    ground_elevation_m: Mapped[float | None] = mapped_column(Double)
    building_id: Mapped[int | None] = mapped_column(
        ForeignKey("buildings.id", ondelete="SET NULL"), index=True
    )
    geom: Mapped[WKBElement] = mapped_column(Geometry("POINT", srid=SRID))


class Pipe(OwnedAsset, Base):
    """A pipe (an edge of a network) under the ground, with depth or invert elevations."""

    __tablename__ = "pipes"
    __table_args__ = (
        UniqueConstraint("dataset", "source_id"),
        _one_of("network", PIPE_NETWORKS),
        _one_of("status", PIPE_STATUSES),
        _one_of("flow_direction", FLOW_DIRECTIONS),
        CheckConstraint("diameter_mm IS NULL OR diameter_mm > 0", name="diameter_positive"),
    )

    network: Mapped[str] = mapped_column(Text, index=True)
    diameter_mm: Mapped[float | None] = mapped_column(Double)
    material: Mapped[str | None] = mapped_column(Text)
    depth_m: Mapped[float | None] = mapped_column(Double)
    invert_start_m: Mapped[float | None] = mapped_column(Double)
    invert_end_m: Mapped[float | None] = mapped_column(Double)
    install_year: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Text, default="in_service", server_default="in_service")
    flow_direction: Mapped[str] = mapped_column(Text, default="unknown", server_default="unknown")
    from_node_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipe_nodes.id", ondelete="SET NULL"), index=True
    )
    to_node_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipe_nodes.id", ondelete="SET NULL"), index=True
    )
    geom: Mapped[WKBElement] = mapped_column(Geometry("LINESTRING", srid=SRID))


class Sensor(OwnedAsset, Base):
    """An IoT sensing device (物联感知设备) with thresholds and its latest reading."""

    __tablename__ = "sensors"
    __table_args__ = (UniqueConstraint("device_id"), Index("ix_sensors_kind", "kind"))

    device_id: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    unit_of_measure: Mapped[str] = mapped_column(Text)
    threshold_low: Mapped[float | None] = mapped_column(Double)
    threshold_high: Mapped[float | None] = mapped_column(Double)
    elevation_m: Mapped[float | None] = mapped_column(Double)
    asset_layer: Mapped[str | None] = mapped_column(Text)
    asset_id: Mapped[int | None] = mapped_column(BigInteger)
    latest_value: Mapped[float | None] = mapped_column(Double)
    latest_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    online: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    geom: Mapped[WKBElement] = mapped_column(Geometry("POINT", srid=SRID))


class TerrainTile(Base):
    """A tile of the ground elevation model (DEM), metres above the vertical datum."""

    __tablename__ = "terrain_tiles"
    __table_args__ = (
        Index(
            "idx_terrain_tiles_rast",
            func.ST_ConvexHull(text("rast")),
            postgresql_using="gist",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    dataset: Mapped[str] = mapped_column(Text, default="", server_default="")
    rast: Mapped[Any] = mapped_column(Raster(spatial_index=False))


class NetworkBurst(Base):
    """A pipe burst turned into action (twin/network/burst.py): its incident, the valve work
    orders, and its isolation, kept while it is open so that isolations open at the same
    time can be told apart and their overlaps reported."""

    __tablename__ = "network_bursts"
    __table_args__ = (
        _one_of("status", ("open", "closed")),
        Index("ix_network_bursts_network_status", "network", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    network: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, default="open", server_default="open")
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="RESTRICT"))
    work_order_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), server_default="{}")
    pipe_id: Mapped[int | None] = mapped_column(ForeignKey("pipes.id", ondelete="SET NULL"))
    valve_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), server_default="{}")
    isolated_pipe_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), server_default="{}")
    answer: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    idempotency_key: Mapped[str | None] = mapped_column(Text, unique=True)
    payload_hash: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_by: Mapped[str | None] = mapped_column(Text)
    close_note: Mapped[str | None] = mapped_column(Text)
    geom: Mapped[WKBElement | None] = mapped_column(Geometry("GEOMETRY", srid=SRID))
