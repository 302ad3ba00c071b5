"""incidents: the reports of every channel with what intake attached and dispatch
decided, their timeline, and the incident layer kind

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-15
"""

from collections.abc import Sequence

import geoalchemy2
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS_BEFORE = (
    "'building', 'public_space', 'pipe', 'pipe_node', 'sensor', 'jurisdiction', 'unit', "
    "'scene', 'terrain'"
)
# As twin.schema has them at this revision (a migration does not import the schema).
CHANNELS = ("hotline_12345", "grid_inspector", "resident_photo", "sensor_alarm", "camera_ai",
            "external_system")  # fmt: skip
STATUSES = ("reported", "dispatched", "accepted", "in_progress", "resolved", "closed",
            "cancelled", "duplicate", "not_our_duty")  # fmt: skip


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _stamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"),
                     nullable=False)  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("category_code", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("address", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.Text(), server_default="reported", nullable=False),
        sa.Column("unit_code", sa.Text(), nullable=True),
        sa.Column("dispatch", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("escalated", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("outside", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("duplicate_of", sa.BigInteger(), nullable=True),
        sa.Column("jurisdictions", postgresql.JSONB(), server_default="[]", nullable=False),
        sa.Column("assets", postgresql.JSONB(), server_default="[]", nullable=False),
        sa.Column("due_response_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_resolve_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("tracking_token", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("payload_hash", sa.Text(), nullable=True),
        sa.Column("reporter", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        _stamp("created_at"),
        _stamp("updated_at"),
        sa.Column(
            "geom",
            geoalchemy2.types.Geometry(
                geometry_type="POINT", srid=4326, spatial_index=False, from_text="ST_GeomFromEWKT",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.CheckConstraint(f"channel IN ({_in(CHANNELS)})",
                           name=op.f("ck_incidents_channel_allowed")),
        sa.CheckConstraint(f"status IN ({_in(STATUSES)})", name=op.f("ck_incidents_status_allowed")),
        sa.ForeignKeyConstraint(
            ["category_code"], ["incident_categories.code"],
            name=op.f("fk_incidents_category_code_incident_categories"),
            ondelete="RESTRICT", onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["unit_code"], ["units.code"], name=op.f("fk_incidents_unit_code_units"),
            ondelete="RESTRICT", onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["duplicate_of"], ["incidents.id"], name=op.f("fk_incidents_duplicate_of_incidents"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
        sa.UniqueConstraint("tracking_token", name=op.f("uq_incidents_tracking_token")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_incidents_idempotency_key")),
    )  # fmt: skip
    op.create_index("idx_incidents_geom", "incidents", ["geom"], postgresql_using="gist")
    for column in ("category_code", "unit_code", "duplicate_of", "reported_at"):
        op.create_index(op.f(f"ix_incidents_{column}"), "incidents", [column])
    op.create_index("ix_incidents_status_reported_at", "incidents", ["status", "reported_at"])
    op.create_table(
        "incident_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("incident_id", sa.BigInteger(), nullable=False),
        _stamp("at"),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("from_status", sa.Text(), nullable=True),
        sa.Column("to_status", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_incident_events_incident_id_incidents"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_events")),
    )  # fmt: skip
    op.create_index("ix_incident_events_incident_id_id", "incident_events", ["incident_id", "id"])
    op.drop_constraint(op.f("ck_layer_catalogue_kind_allowed"), "layer_catalogue", type_="check")
    op.create_check_constraint(
        op.f("ck_layer_catalogue_kind_allowed"), "layer_catalogue",
        f"kind IN ({KINDS_BEFORE}, 'incident')",
    )  # fmt: skip


def downgrade() -> None:
    op.execute("DELETE FROM layer_catalogue WHERE kind = 'incident'")
    op.drop_constraint(op.f("ck_layer_catalogue_kind_allowed"), "layer_catalogue", type_="check")
    op.create_check_constraint(
        op.f("ck_layer_catalogue_kind_allowed"), "layer_catalogue", f"kind IN ({KINDS_BEFORE})"
    )
    op.drop_table("incident_events")
    op.drop_table("incidents")
